/** How the CLI writes: stdout for results, stderr for progress and errors. */
export function print(text: string): void {
  process.stdout.write(`${text}\n`)
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`)
}

export function note(text: string): void {
  process.stderr.write(`${text}\n`)
}

/** A duration in ms as people read it: 850 ms, 12.3 s, 4m 05s, 2h 10m. */
export function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`
  const seconds = Math.floor(ms / 1000)
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${String(seconds % 60).padStart(2, '0')}s`
  return `${Math.floor(seconds / 3600)}h ${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`
}

/** Left-aligned columns, numbers right-aligned. */
export function table(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((row) => row.map(String))]
  const widths = header.map((_, i) => Math.max(...cells.map((row) => (row[i] ?? '').length)))
  return cells
    .map((row, r) =>
      row
        .map((cell, i) => {
          const numeric = r > 0 && typeof rows[r - 1]?.[i] === 'number'
          return numeric ? cell.padStart(widths[i] ?? 0) : cell.padEnd(widths[i] ?? 0)
        })
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
}

/** Bytes as text when they are printable UTF-8, else `base64:...` (keys and values are opaque). */
export function bytesText(bytes: Buffer | null): string | null {
  if (bytes === null) return null
  const text = bytes.toString('utf8')
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what make bytes unprintable
  if (Buffer.from(text, 'utf8').equals(bytes) && !/[\u0000-\u0008\u000e-\u001f\u007f]/.test(text)) return text
  return `base64:${bytes.toString('base64')}`
}
