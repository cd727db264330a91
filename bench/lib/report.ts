// What scenarios return, how it is printed, and the JSON written to bench-results/.
import { mkdir, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'

/** A printed table: cells are already formatted text; raw numbers go in `ScenarioResult.data`. */
export interface Table {
  title: string
  columns: string[]
  rows: string[][]
  notes?: string[]
}

/** One target of the issue, read against what was measured. `met: null` means not measurable. */
export interface Target {
  name: string
  target: string
  measured: string
  met: boolean | null
}

export interface ScenarioResult {
  id: string
  title: string
  tables: Table[]
  targets: Target[]
  /** Machine-readable numbers (rates in msg/s, times in ms, CPU in s). */
  data: Record<string, unknown>
  durationS?: number
  error?: string
}

export const NOT_IMPLEMENTED = 'n/a (not implemented yet)'

export function fmtInt(value: number): string {
  if (!Number.isFinite(value)) return '-'
  return Math.round(value).toLocaleString('en-US')
}

export function fmt(value: number, digits = 1): string {
  if (!Number.isFinite(value)) return '-'
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

export function fmtRatio(value: number, digits = 2): string {
  return Number.isFinite(value) ? `${fmt(value, digits)}x` : '-'
}

export function formatTable(table: Table): string {
  const widths = table.columns.map((column, i) =>
    Math.max(column.length, ...table.rows.map((row) => (row[i] ?? '').length)),
  )
  const line = (cells: string[]) =>
    `| ${cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join(' | ')} |`
  const out = [
    `### ${table.title}`,
    '',
    line(table.columns),
    `|${widths.map((width, i) => (i === 0 ? `${'-'.repeat(width + 1)}-` : `${'-'.repeat(width + 1)}:`)).join('|')}|`,
    ...table.rows.map(line),
  ]
  if (table.notes?.length) out.push('')
  for (const note of table.notes ?? []) out.push(`- ${note}`)
  return out.join('\n')
}

export function targetsTable(results: ScenarioResult[]): Table {
  const rows: string[][] = []
  for (const result of results) {
    for (const target of result.targets) {
      rows.push([
        `${result.id}: ${target.name}`,
        target.target,
        target.measured,
        target.met === null ? 'n/a' : target.met ? 'met' : 'NOT met',
      ])
    }
  }
  return { title: 'Targets', columns: ['target', 'wanted', 'measured', 'verdict'], rows }
}

export interface RunReport {
  version: 1
  startedAt: string
  finishedAt: string
  mode: 'short' | 'full'
  command: string
  machine: Record<string, unknown>
  features: Record<string, unknown>
  scenarios: ScenarioResult[]
}

export const RESULTS_DIR = resolve(import.meta.dirname, '..', '..', 'bench-results')

/** Writes `bench-results/<timestamp>.json` and `bench-results/latest.json`; returns the first path. */
export async function writeReport(report: RunReport): Promise<string> {
  await mkdir(RESULTS_DIR, { recursive: true })
  const text = `${JSON.stringify(report, (_key, value) => (typeof value === 'bigint' ? value.toString() : value), 2)}\n`
  const stamp = report.startedAt.replaceAll(':', '-').replace(/\.\d+Z$/, 'Z')
  const path = join(RESULTS_DIR, `${stamp}-${report.mode}.json`)
  await writeFile(path, text)
  await writeFile(join(RESULTS_DIR, 'latest.json'), text)
  return path
}
