/**
 * Reproduction of the consumer stall the chaos run's --consumer found (no database needed):
 * a plain consume() consumer reads a topic on its own broker; the broker is stopped for
 * `--down` seconds (default 5) and started again; then more messages are produced. A consumer
 * that recovers handles them all; one whose fetch stream failed while the broker was away logs
 * "the Kafka consumer stream failed" and handles nothing more, while its process (and group
 * membership) lives on. Also: a consumer started while the broker is away logs "could not join
 * its group" and never consumes once the broker is back.
 *
 *   scripts/node-env.sh node chaos/repro-consumer-stall.ts [--down 5]
 *
 * Exit code 0 if every message was handled after the broker came back, 1 if the consumers stalled.
 */
import { rmSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { consume } from '../src/consumer/consume.ts'
import { defineTopic } from '../src/core/topic.ts'
import { createTopic, produceRaw } from '../test/consumer/kafka.ts'
import { ChaosBroker, freePorts } from './faults.ts'
import { sleep } from './shared.ts'

const { values } = parseArgs({ options: { down: { type: 'string', default: '5' } } })
const downMs = Number(values.down) * 1000
const dir = join(os.tmpdir(), `k-entity-consumer-stall-${process.pid}`)
const [port, controllerPort] = (await freePorts(2)) as [number, number]
const broker = new ChaosBroker(join(dir, 'kafka'), port, controllerPort)
const log = (text: string) => console.log(`[${new Date().toISOString()}] ${text}`)
let exitCode = 1
try {
  await broker.start()
  const brokers = [broker.brokers]
  const topic = defineTopic<{ n: number }>({ name: 'stall', key: (event) => String(event.n % 7) })
  await createTopic(brokers, topic.name, 3)
  const errors: string[] = []
  const logger = {
    error: (context: object | string, message?: string) =>
      errors.push(`${message}: ${JSON.stringify(context).slice(0, 200)}`),
    warn: () => {},
    info: () => {},
  }
  const handled = new Set<number>()
  const options = {
    kafka: { brokers },
    groupId: 'stall-group',
    maxWaitMs: 100,
    sessionTimeoutMs: 6000,
    logger,
    handler: async (message: { value: { n: number } | null }) => {
      handled.add((message.value as { n: number }).n)
    },
  }
  const batch = (from: number, to: number) =>
    Array.from({ length: to - from }, (_, i) => ({
      key: String((from + i) % 7),
      value: JSON.stringify({ n: from + i }),
    }))
  const running = consume(topic, options)
  await produceRaw(brokers, topic.name, batch(0, 100))
  await sleep(3000)
  log(`before the outage: ${handled.size}/100 handled`)
  await broker.stop()
  log(`broker stopped for ${downMs} ms; a second consumer starts while it is away`)
  const late = consume(topic, { ...options, groupId: 'stall-group-late' })
  await sleep(downMs)
  await broker.start()
  log('broker back')
  await sleep(5000)
  await produceRaw(brokers, topic.name, batch(100, 200))
  const deadline = Date.now() + 60_000
  while (handled.size < 200 && Date.now() < deadline) await sleep(500)
  log(
    `after the outage: ${handled.size}/200 handled by the first consumer (${running.counts.handled} counted); the late one handled ${late.counts.handled}/200`,
  )
  for (const error of errors) log(`logged error: ${error}`)
  exitCode = handled.size === 200 && late.counts.handled === 200 ? 0 : 1
  log(exitCode === 0 ? 'recovered' : 'STALLED: a consumer stopped for good after the broker outage')
  await Promise.race([Promise.all([running.close(), late.close()]), sleep(10_000)])
} finally {
  await broker.stop().catch(() => {})
  rmSync(dir, { recursive: true, force: true })
}
process.exit(exitCode)
