/**
 * A consumer process of the chaos run (--consumer): reads the run's two delivered topics with
 * `outbox.consume()` and the inbox, applying one effect per message in the inbox transaction
 * (chaos/db/consumer-db.ts). Reports its counts to the runner every CONSUMER_REPORT_MS; the
 * runner kills it with SIGKILL at planned moments (kill -9 loses the counts since the last
 * report, never an effect) and starts the next life. { type: 'stop' }: a graceful close.
 */
import { openConsumers } from './db/consumer-db.ts'
import type { ConsumerCommand, ConsumerConfig, ConsumerCounts, ConsumerReport } from './shared.ts'
import { env } from './shared.ts'

const CONSUMER_REPORT_MS = 200

const config = JSON.parse(env('CHAOS_CONSUMER')) as ConsumerConfig
const report = (message: ConsumerReport) => {
  if (process.connected) process.send?.(message)
}
const opened = await openConsumers(config)

const counts = (): ConsumerCounts => {
  const sum: ConsumerCounts = { handled: 0, duplicates: 0, deadLettered: 0, retried: 0, reconnects: 0 }
  for (const consumer of opened.consumers) {
    sum.handled += consumer.counts.handled
    sum.duplicates += consumer.counts.duplicates
    sum.deadLettered += consumer.counts.deadLettered
    sum.retried += consumer.counts.retried
    sum.reconnects += consumer.counts.reconnects
  }
  return sum
}

report({ type: 'loaded', pid: process.pid })
const timer = setInterval(
  () => report({ type: 'counts', pid: process.pid, final: false, ...counts() }),
  CONSUMER_REPORT_MS,
)

let stopping = false
async function stop(): Promise<void> {
  if (stopping) return
  stopping = true
  clearInterval(timer)
  try {
    await Promise.all(opened.consumers.map((consumer) => consumer.close()))
    await opened.end()
  } catch (error) {
    report({ type: 'failed', pid: process.pid, message: String((error as Error)?.stack ?? error) })
  }
  const final: ConsumerReport = { type: 'counts', pid: process.pid, final: true, ...counts() }
  if (!process.send || !process.connected) process.exit(0)
  process.send(final, () => process.exit(0))
}

process.on('message', (message: ConsumerCommand) => {
  if (message.type === 'stop') void stop()
})
// The runner is gone: nothing will stop or read us.
process.on('disconnect', () => {
  void stop()
})
