// Before/after: the same benchmark scenarios run alternately on an earlier commit and on this
// checkout, against one broker and one PostgreSQL, so a change's cost is read from ratios
// measured side by side rather than from runs on different days.
//
// Usage: node bench/before-after.ts --before <rev> [--reps N] [--only throughput,write-path] [--full]
//
// The earlier commit is checked out once into $TMPDIR/k-entity-before/<commit>/ (a detached git
// worktree with its own `npm ci`, outside the checkout so linters and test globs never see it). Each repetition runs both sides, in alternating order, and reads the ratios each
// run measured against its own baseline (relay vs raw producer, write path vs plain transaction).
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { startKafkaBroker } from '../scripts/kafka-broker.ts'
import type { RunReport } from './lib/report.ts'
import { midpointMedian as median } from './lib/stats.ts'

const ROOT = resolve(import.meta.dirname, '..')

function log(message: string): void {
  process.stderr.write(`${message}\n`)
}

function run(
  command: string,
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<void> {
  return new Promise((done, fail) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'inherit', 'inherit'] })
    child.on('error', fail)
    child.on('exit', (code) =>
      code === 0 ? done() : fail(new Error(`${command} ${args.join(' ')} exited with ${code} in ${cwd}`)),
    )
  })
}

function capture(command: string, args: string[], cwd: string): Promise<string> {
  return new Promise((done, fail) => {
    const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString()
    })
    child.on('error', fail)
    child.on('exit', (code) =>
      code === 0 ? done(out.trim()) : fail(new Error(`${command} exited with ${code}`)),
    )
  })
}

/** A detached worktree of `rev` with its dependencies, reusing this checkout's Node and broker jars. */
async function checkoutBefore(rev: string): Promise<{ dir: string; commit: string }> {
  const commit = await capture('git', ['rev-parse', '--verify', `${rev}^{commit}`], ROOT)
  const dir = join(tmpdir(), 'k-entity-before', commit.slice(0, 12))
  if (!existsSync(join(dir, 'package.json'))) {
    mkdirSync(dirname(dir), { recursive: true })
    await run('git', ['worktree', 'add', '--detach', dir, commit], ROOT)
  }
  for (const shared of ['.tools', '.kafka']) {
    if (!existsSync(join(dir, shared)) && existsSync(join(ROOT, shared)))
      symlinkSync(join(ROOT, shared), join(dir, shared))
  }
  if (!existsSync(join(dir, 'node_modules'))) await run('npm', ['ci', '--no-audit', '--no-fund'], dir)
  return { dir, commit }
}

type Figures = Record<string, number>

/** The ratios a run measured, keyed by what they compare. */
function figuresOf(report: RunReport): Figures {
  const figures: Figures = {}
  for (const scenario of report.scenarios) {
    const data = scenario.data as Record<string, unknown>
    if (scenario.id === 'throughput') {
      const byBatch = (data.medianRatioByBatch ?? {}) as Record<string, number>
      for (const [batch, ratio] of Object.entries(byBatch)) figures[`relay/raw, batch ${batch}`] = ratio
    }
    if (scenario.id === 'write-path') {
      const variants = (data.variants ?? {}) as Record<string, { label: string; meanRatioToPlain: number }>
      for (const variant of Object.values(variants)) {
        if (variant.meanRatioToPlain !== 1) figures[`write path: ${variant.label}`] = variant.meanRatioToPlain
      }
    }
  }
  return figures
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      before: { type: 'string' },
      reps: { type: 'string', default: '3' },
      only: { type: 'string', default: 'throughput,write-path' },
      full: { type: 'boolean', default: false },
    },
  })
  const reps = Number(values.reps)
  if (values.before === undefined || !Number.isInteger(reps) || reps < 1) {
    log('usage: node bench/before-after.ts --before <rev> [--reps N] [--only throughput,write-path] [--full]')
    return 2
  }
  const before = await checkoutBefore(values.before)
  const after = { dir: ROOT, commit: await capture('git', ['rev-parse', 'HEAD'], ROOT) }
  const broker = await startKafkaBroker({ jvm: 'server' })
  const sides = { before, after }
  const results: Record<'before' | 'after', Figures[]> = { before: [], after: [] }
  try {
    for (let rep = 0; rep < reps; rep++) {
      const order: Array<'before' | 'after'> = rep % 2 === 0 ? ['before', 'after'] : ['after', 'before']
      for (const side of order) {
        log(`\n== rep ${rep + 1}/${reps}: ${side} (${sides[side].commit.slice(0, 9)})`)
        const args = ['bench/run.ts', `--only=${values.only}`, ...(values.full ? ['--full'] : [])]
        await run(process.execPath, args, sides[side].dir, { ...process.env, KAFKA_BROKERS: broker.brokers })
        const report = JSON.parse(readFileSync(join(sides[side].dir, 'bench-results', 'latest.json'), 'utf8'))
        results[side].push(figuresOf(report as RunReport))
      }
    }
  } finally {
    await broker.stop()
  }
  const names = [...new Set([...results.before, ...results.after].flatMap((f) => Object.keys(f)))]
  const lines = [
    `before ${before.commit.slice(0, 9)} / after ${after.commit.slice(0, 9)}, ${reps} repetitions, alternating order`,
    '| figure | before (median; runs) | after (median; runs) | after / before |',
    '| --- | --- | --- | --- |',
  ]
  for (const name of names) {
    const b = results.before.map((f) => f[name]).filter((v): v is number => v !== undefined)
    const a = results.after.map((f) => f[name]).filter((v): v is number => v !== undefined)
    const cell = (v: number[]) =>
      v.length === 0 ? '-' : `${median(v).toFixed(3)}; ${v.map((x) => x.toFixed(2)).join(', ')}`
    const change = a.length > 0 && b.length > 0 ? (median(a) / median(b)).toFixed(3) : '-'
    lines.push(`| ${name} | ${cell(b)} | ${cell(a)} | ${change} |`)
  }
  const table = lines.join('\n')
  console.log(`\n${table}`)
  const out = join(ROOT, 'bench-results', `before-after-${new Date().toISOString().replaceAll(':', '-')}.md`)
  mkdirSync(join(ROOT, 'bench-results'), { recursive: true })
  writeFileSync(out, `${table}\n`)
  log(`\nwritten to ${out}`)
  return 0
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    log(error instanceof Error ? (error.stack ?? error.message) : String(error))
    process.exit(1)
  },
)
