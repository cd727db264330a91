import { randomBytes } from 'node:crypto'
import { Admin } from '@platformatic/kafka'
import pg from 'pg'
import type { PgSession } from '../../src/dialects/postgres/session.ts'

export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test'

export function kafkaBrokers(): string[] {
  const brokers = process.env.KAFKA_BROKERS
  if (!brokers)
    throw new Error('KAFKA_BROKERS is not set: run the tests with `npm test`, which starts a broker')
  return brokers.split(',')
}

/**
 * Kafka options for tests that produce to topics they never created: the library no longer lets
 * the broker create topics on a send by default, so such tests ask for it explicitly.
 */
export function testKafka(): { brokers: string[]; autoCreateTopics: true } {
  return { brokers: kafkaBrokers(), autoCreateTopics: true }
}

/** Lower-case, unique per call: safe as a schema, table or topic name. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(5).toString('hex')}`
}

export async function createTopic(name: string, partitions: number, brokers = kafkaBrokers()): Promise<void> {
  const admin = new Admin({ clientId: 'k-entity-tests', bootstrapBrokers: brokers })
  try {
    await admin.createTopics({ topics: [name], partitions, replicas: 1 })
  } finally {
    await admin.close()
  }
}

/** A session for a relay store built by hand, named so that a test finds its own in pg_stat_activity. */
export function relaySessionOpener(applicationName: string): () => Promise<PgSession> {
  return async () => {
    const client = new pg.Client({ connectionString: DATABASE_URL, application_name: applicationName })
    client.on('error', () => {})
    await client.connect()
    return client as unknown as PgSession
  }
}

export async function withClient<R>(fn: (client: pg.Client) => Promise<R>): Promise<R> {
  const client = new pg.Client({ connectionString: DATABASE_URL })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

export async function dropSchema(schema: string): Promise<void> {
  await withClient((client) => client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`))
}

export async function countRows(schema: string, table = 'outbox'): Promise<number> {
  return withClient(async (client) => {
    const result = await client.query(`SELECT count(*)::int AS n FROM "${schema}"."${table}"`)
    return result.rows[0].n as number
  })
}

/** `what` may be a function, to say in the timeout's message how far things got. */
export async function waitFor(
  condition: () => Promise<boolean> | boolean,
  {
    timeout = 60_000,
    interval = 100,
    what = 'condition',
  }: { timeout?: number; interval?: number; what?: string | (() => string) } = {},
): Promise<void> {
  const deadline = Date.now() + timeout
  while (!(await condition())) {
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeout} ms waiting for ${typeof what === 'function' ? what() : what}`,
      )
    }
    await new Promise((resolve) => setTimeout(resolve, interval))
  }
}

/**
 * Records the text of every node-postgres query (one per round trip) of the clients `which`
 * accepts, until `stop()`: the `application_name` a test gave its connections tells them apart.
 */
export function recordQueries(which: (applicationName: string | undefined) => boolean = () => true): {
  texts: string[]
  stop(): void
} {
  const texts: string[] = []
  const prototype = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown }
  const original = prototype.query
  prototype.query = function (this: { connectionParameters: { application_name?: string } }, ...args) {
    if (which(this.connectionParameters.application_name)) {
      const [first] = args
      const submittable = typeof (first as { submit?: unknown }).submit === 'function'
      texts.push(
        typeof first === 'string'
          ? first
          : submittable
            ? `<${(first as object).constructor.name}>`
            : String((first as { text?: string }).text),
      )
    }
    return original.apply(this, args)
  }
  return {
    texts,
    stop() {
      prototype.query = original
    },
  }
}

/** Moves the outbox table of `schema` away while `body` runs, so that a write fails wherever it is sent. */
export async function withoutOutbox(schema: string, body: () => Promise<void>): Promise<void> {
  const rename = (from: string, to: string) =>
    withClient((client) => client.query(`ALTER TABLE "${schema}".${from} RENAME TO ${to}`))
  await rename('outbox', 'outbox_away')
  try {
    await body()
  } finally {
    await rename('outbox_away', 'outbox')
  }
}
