// pg-transactional-outbox 0.5.7 (the peer) set up for the same workload, in the configuration the
// field survey found fastest while still delivering everything: messages marked `parallel`, a
// fixed batch size of 1000 (its default strategy fetches one message per poll at first), 10 ms
// polling, cleanup off, no poison / max-attempt bookkeeping (both off by default for outboxes).
import type pg from 'pg'
import {
  DatabaseSetup,
  getDisabledLogger,
  initializeMessageStorage,
  initializePollingMessageListener,
  type PollingListenerConfig,
  type StoredTransactionalMessage,
} from 'pg-transactional-outbox'
import type { MessageTransport } from '../../src/index.ts'
import { TRACKING_ID_HEADER, TRACKING_SEQ_HEADER } from '../../src/testing/index.ts'
import { type BenchMessage, benchMessage, PREFILL_CHUNK } from './workload.ts'

export const PEER_TABLE = 'outbox'
export const PEER_FUNCTION = 'next_outbox_messages'
export const PEER_BATCH_SIZE = 1000
export const PEER_POLLING_MS = 10

/** Creates the peer's table, polling function and indexes in `schema` (which must be new). */
export async function setupPeer(client: pg.Client, schema: string): Promise<void> {
  const config = {
    outboxOrInbox: 'outbox' as const,
    database: 'test',
    schema,
    table: PEER_TABLE,
    listenerRole: 'unused',
    nextMessagesName: PEER_FUNCTION,
    nextMessagesSchema: schema,
  }
  await client.query(DatabaseSetup.dropAndCreateTable(config))
  await client.query(DatabaseSetup.createPollingFunction(config))
  // Its index script drops indexes by unqualified name (i.e. in whatever schema the search path
  // finds first) before creating them; only the CREATE statements are run, so nothing outside
  // this benchmark's schema can be touched.
  const creates = DatabaseSetup.setupPollingIndexes(config)
    .split(';')
    .map((statement) => statement.trim())
    .filter((statement) => statement.startsWith('CREATE INDEX'))
    .map((statement) => statement.replace(/^CREATE INDEX (\w+)/, `CREATE INDEX ${schema}_$1`))
  for (const statement of creates) await client.query(statement)
}

interface PeerPayload {
  id: string
  key: string
  seq: number
  body: string
}

function peerPayload(message: BenchMessage): PeerPayload {
  return { id: message.id, key: message.key, seq: message.seq, body: message.body.toString('latin1') }
}

/**
 * Pre-fills the peer's table with the same messages (same ids, keys, 256-byte bodies) in
 * multi-row inserts of 1000; its own storage function is one insert per message, which would
 * make the (unmeasured) pre-fill slow. Rows get increasing `created_at`, its processing order.
 */
export async function prefillPeer(
  client: pg.Client,
  schema: string,
  prefix: string,
  from: number,
  to: number,
): Promise<void> {
  for (let start = from; start < to; start += PREFILL_CHUNK) {
    const keys: string[] = []
    const payloads: string[] = []
    for (let i = start; i < Math.min(to, start + PREFILL_CHUNK); i++) {
      const message = benchMessage(prefix, i)
      keys.push(message.key)
      payloads.push(JSON.stringify(peerPayload(message)))
    }
    await client.query(
      `INSERT INTO "${schema}".${PEER_TABLE}
         (id, aggregate_type, aggregate_id, message_type, segment, concurrency, payload, created_at)
       SELECT gen_random_uuid(), 'order', m.k, 'order_created', m.k, 'parallel', m.p, clock_timestamp()
       FROM unnest($1::text[], $2::jsonb[]) WITH ORDINALITY AS m(k, p, n) ORDER BY m.n`,
      [keys, payloads],
    )
  }
}

function peerSettings(schema: string) {
  return {
    dbSchema: schema,
    dbTable: PEER_TABLE,
    enableMaxAttemptsProtection: false,
    enablePoisonousMessageProtection: false,
    messageCleanupIntervalInMs: 0,
    nextMessagesFunctionName: PEER_FUNCTION,
    nextMessagesFunctionSchema: schema,
    nextMessagesBatchSize: PEER_BATCH_SIZE,
    nextMessagesPollingIntervalInMs: PEER_POLLING_MS,
  }
}

/** The peer's storage function, for the write side of its latency measurement. */
export function peerStorage(schema: string) {
  const store = initializeMessageStorage(
    { outboxOrInbox: 'outbox', settings: peerSettings(schema) },
    getDisabledLogger(),
  )
  return (message: BenchMessage, client: pg.Client) =>
    store(
      {
        id: crypto.randomUUID(),
        aggregateType: 'order',
        aggregateId: message.key,
        messageType: 'order_created',
        segment: message.key,
        concurrency: 'parallel',
        payload: peerPayload(message),
      },
      client,
    )
}

/**
 * Starts the peer's polling listener. Its handler sends each message with `transport` (our
 * KafkaTransport: the same @platformatic/kafka producer and settings as our relay), awaiting the
 * acknowledgement as the peer's handler contract requires, and reports the message's id.
 */
export function startPeerListener(options: {
  schema: string
  databaseUrl: string
  topic: string
  transport: MessageTransport
  onHandled: (id: string) => void
  onError: (error: unknown) => void
}): () => Promise<void> {
  const config: PollingListenerConfig = {
    outboxOrInbox: 'outbox',
    dbListenerConfig: { connectionString: options.databaseUrl, application_name: 'k-entity-bench-peer' },
    settings: peerSettings(options.schema),
  }
  const [shutdown] = initializePollingMessageListener(
    config,
    {
      handle: async (message: StoredTransactionalMessage) => {
        const payload = message.payload as PeerPayload
        await options.transport.send([
          {
            topic: options.topic,
            key: Buffer.from(payload.key),
            value: Buffer.from(payload.body, 'latin1'),
            headers: [
              [TRACKING_ID_HEADER, Buffer.from(payload.id)],
              [TRACKING_SEQ_HEADER, Buffer.from(String(payload.seq))],
            ],
            orderingHash: null,
          },
        ])
        options.onHandled(payload.id)
      },
      handleError: async (error) => {
        options.onError(error)
      },
    },
    getDisabledLogger(),
    { batchSizeStrategy: async () => PEER_BATCH_SIZE },
  )
  return shutdown
}
