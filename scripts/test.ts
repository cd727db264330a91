// `npm test`: runs the node:test suites against one real Kafka broker shared by all test files.
// Usage: node scripts/test.ts [--node-test-flag=value ...] [test files ...]
// With KAFKA_BROKERS already set (e.g. from `npm run kafka start`) that broker is used instead.
import { spawn } from 'node:child_process'
import { globSync } from 'node:fs'
import { constants } from 'node:os'
import { resolve } from 'node:path'
import { type KafkaBroker, startKafkaBroker } from './kafka-broker.ts'

const REPO_ROOT = resolve(import.meta.dirname, '..')

const args = process.argv.slice(2)
const flags = args.filter((arg) => arg.startsWith('-'))
const named = args.filter((arg) => !arg.startsWith('-'))
const files = named.length > 0 ? named : globSync('test/**/*.test.ts', { cwd: REPO_ROOT }).sort()
if (files.length === 0) {
  console.error('scripts/test.ts: no test files match test/**/*.test.ts')
  process.exit(1)
}

let broker: KafkaBroker | undefined
if (!process.env.KAFKA_BROKERS) {
  try {
    broker = await startKafkaBroker()
  } catch (error) {
    console.error(
      `scripts/test.ts: could not start a Kafka broker for the tests:\n${error instanceof Error ? error.message : error}`,
    )
    process.exit(1)
  }
  process.env.KAFKA_BROKERS = broker.brokers
}
// The machine's PostgreSQL trusts local TCP connections, so no password is needed.
process.env.DATABASE_URL ??= 'postgres://postgres@127.0.0.1:5432/test'

const child = spawn(
  process.execPath,
  ['--test', '--test-concurrency=1', '--test-timeout=600000', ...flags, ...files],
  { cwd: REPO_ROOT, stdio: 'inherit', env: process.env },
)

// The runner gets the signal and reports what it cancelled; the broker goes down after it.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => child.kill(signal))
}

const exitCode = await new Promise<number>((resolveExit) => {
  child.once('error', (error) => {
    console.error(`scripts/test.ts: could not run the test runner: ${error.message}`)
    resolveExit(1)
  })
  child.once('exit', (code, signal) => resolveExit(signal ? 128 + constants.signals[signal] : (code ?? 1)))
})

try {
  await broker?.stop()
} catch (error) {
  console.error(
    `scripts/test.ts: stopping the Kafka broker failed: ${error instanceof Error ? error.message : error}`,
  )
}
process.exit(exitCode)
