import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { NodeMode, OutboxRelay, RelayEvent } from '../../core/relay.ts'
import { defineTopic } from '../../core/topic.ts'
import { driverTarget, explain, type Target, target } from '../database.ts'
import { brokersOf, probeKafka } from '../kafka-probe.ts'
import { note, print } from '../output.ts'
import { CONNECTION_HELP, CONNECTION_OPTIONS, parse, UsageError } from '../usage.ts'

export const RELAY_HELP = `Usage: k-entity relay --config ./outbox.config.js [--mode M]
       k-entity relay [--url URL] [--brokers host:port,...] [--mode M]

Runs a relay until SIGINT or SIGTERM, then stops gracefully (the batch in flight finishes or
stays in the outbox).
  --config PATH    a module exporting your outbox (default export or 'outbox'), and optionally
                   'relayOptions'; the relay then uses your topics' retry policies
  --brokers LIST   Kafka bootstrap brokers (default KAFKA_BROKERS); without --config, required
  --mode M         single (default), exclusive or concurrent; see the README's relay modes

Without --config the relay is built from the database URL alone: it sends every row as stored,
with the default retry policy.

${CONNECTION_HELP}`

interface RelayingOutbox {
  relay(options?: object): OutboxRelay
  close?(): Promise<void>
}

export async function relay(args: string[]): Promise<number> {
  const { values } = parse('relay', args, {
    ...CONNECTION_OPTIONS,
    config: { type: 'string' },
    brokers: { type: 'string' },
    mode: { type: 'string' },
  })
  if (values.help) {
    print(RELAY_HELP)
    return 0
  }
  const mode = values.mode as NodeMode | undefined
  if (mode !== undefined && !['single', 'exclusive', 'concurrent'].includes(mode)) {
    throw new UsageError(`--mode must be single, exclusive or concurrent, got '${mode}'`)
  }
  const brokers = brokersOf(values.brokers)
  let outbox: RelayingOutbox
  let options: Record<string, unknown> = {}
  let t: Target | undefined
  let description: string
  if (values.config !== undefined) {
    const loaded = await loadConfig(values.config)
    outbox = loaded.outbox
    options = { ...loaded.relayOptions }
    if (values.url !== undefined) {
      t = target(values)
      options.connection = driverTarget(t)
    }
    description = `the outbox of ${values.config}`
  } else {
    t = target(values)
    if (brokers === undefined) {
      throw new UsageError('the relay needs Kafka: pass --brokers host:9092 or set KAFKA_BROKERS')
    }
    outbox = await outboxFor(t, brokers)
    options.connection = driverTarget(t)
    description = `${t.where} (outbox ${t.schema ?? 'k_entity'}.${t.table ?? 'outbox'})`
  }
  if (brokers !== undefined) {
    const problem = await probeKafka(brokers)
    if (problem !== undefined) {
      note(
        `k-entity: cannot reach Kafka at ${brokers.join(',')} (${problem}): start a broker (k-entity kafka start for development), or fix --brokers / KAFKA_BROKERS`,
      )
      return 1
    }
    options.kafka = { ...(options.kafka as object | undefined), brokers }
  }
  if (mode !== undefined) options.mode = mode
  const userOnEvent = options.onEvent as ((event: RelayEvent) => void) | undefined
  options.onEvent = (event: RelayEvent) => {
    if (event.type === 'leadership')
      note(
        `k-entity relay: ${event.leader ? 'leading' : `standing by${event.reason ? `: ${event.reason}` : ''}`}`,
      )
    userOnEvent?.(event)
  }
  let running: OutboxRelay
  try {
    running = outbox.relay(options)
  } catch (error) {
    throw new UsageError(explain(error, t))
  }
  await running.start()
  note(
    `k-entity relay: relaying ${description} to Kafka${brokers ? ` at ${brokers.join(',')}` : ''}, mode ${mode ?? (options.mode as string | undefined) ?? 'single'}; SIGINT/SIGTERM stops it`,
  )
  const signal = await new Promise<NodeJS.Signals>((resolveSignal) => {
    process.once('SIGINT', () => resolveSignal('SIGINT'))
    process.once('SIGTERM', () => resolveSignal('SIGTERM'))
  })
  note(`k-entity relay: ${signal}, stopping`)
  await running.stop()
  await outbox.close?.()
  note('k-entity relay: stopped')
  return 0
}

async function loadConfig(path: string): Promise<{ outbox: RelayingOutbox; relayOptions?: object }> {
  let module: Record<string, unknown>
  try {
    module = await import(pathToFileURL(resolve(path)).href)
  } catch (error) {
    throw new UsageError(
      `cannot load --config ${path}: ${error instanceof Error ? error.message : String(error)}`,
    )
  }
  const outbox = (module.outbox ?? module.default) as RelayingOutbox | undefined
  if (typeof outbox?.relay !== 'function') {
    throw new UsageError(
      `--config ${path} must export your outbox (export const outbox = createPgOutbox({...}), or as the default export)`,
    )
  }
  const relayOptions = module.relayOptions
  if (relayOptions !== undefined && (typeof relayOptions !== 'object' || relayOptions === null)) {
    throw new UsageError(`--config ${path}: 'relayOptions' must be an object of relay options`)
  }
  return { outbox, relayOptions: relayOptions as object | undefined }
}

/**
 * An outbox for relaying only. The relay sends each row to the topic stored with it; the topics
 * map adds only per-topic retry policies, so one placeholder topic stands for an app's map.
 */
async function outboxFor(t: Target, brokers: string[]): Promise<RelayingOutbox> {
  const options = {
    topics: { relayed: defineTopic<Buffer>({ name: 'k-entity-cli-relay' }) },
    kafka: { brokers },
    ...(t.schema === undefined ? {} : { schema: t.schema }),
    ...(t.table === undefined ? {} : { table: t.table }),
  }
  if (t.database === 'postgres') return (await import('../../adapters/pg/index.ts')).createPgOutbox(options)
  if (t.database === 'mysql')
    return (await import('../../adapters/mysql2/index.ts')).createMysqlOutbox(options)
  return (await import('../../adapters/node-sqlite/index.ts')).createNodeSqliteOutbox(options)
}
