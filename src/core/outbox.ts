import { describe, ErrorCodes, invalidArgument, isKEntityError, KEntityError, notMigrated } from './errors.ts'
import { resolveTable } from './identifiers.ts'
import type { OutboxRecord } from './record.ts'
import type {
  MessageTransport,
  OutboxDialect,
  OutboxTable,
  SyncTransactionAdapter,
  TransactionAdapter,
} from './seams.ts'
import { type ProduceOptions, Topic, topicCollisionKey } from './topic.ts'
import { checkTracing, type OutboxTracing } from './tracing.ts'

// biome-ignore lint/suspicious/noExplicitAny: a topic map holds topics of unrelated message types
export type TopicMap = Record<string, Topic<any>>

export type MessageOf<X> = X extends Topic<infer T> ? T : never

/** The typed accessor for one topic, bound to one transaction. */
export interface TopicProducer<T> {
  /** Stores one message in the outbox within the bound transaction (or sends it, for non-outbox topics). */
  produce(message: T, options?: ProduceOptions): Promise<void>
  /** Stores several messages with one multi-row statement. */
  produceMany(messages: readonly T[], options?: ProduceOptions): Promise<void>
}

export type TopicProducers<M extends TopicMap> = { readonly [K in keyof M]: TopicProducer<MessageOf<M[K]>> }

/** The typed accessor for one topic on a synchronous driver: writes inside the open transaction. */
export interface SyncTopicProducer<T> {
  /** Stores one message in the outbox within the open transaction; throws if nothing is open. */
  produce(message: T, options?: ProduceOptions): void
  /** Stores several messages with one multi-row statement (per 1,000 messages). */
  produceMany(messages: readonly T[], options?: ProduceOptions): void
}

export type SyncTopicProducers<M extends TopicMap> = {
  readonly [K in keyof M]: SyncTopicProducer<MessageOf<M[K]>>
}

export interface OutboxOptions<M extends TopicMap> {
  topics: M
  /** Schema holding the outbox table (default `k_entity`). */
  schema?: string
  /** Outbox table name (default `outbox`). */
  table?: string
  /**
   * Carries the app's trace with each message: headers stored at produce time (W3C
   * `traceparent`), and a span around each batch the outbox's relays send. Pass `otelTracing()`
   * from `k-entity/opentelemetry`, or your own `OutboxTracing`.
   */
  tracing?: OutboxTracing
}

const RESERVED_ACCESSORS = new Set(['then', 'constructor', '__proto__', 'prototype', 'toJSON'])

/**
 * The topic mapping of one application plus where its outbox lives. Immutable; create it once
 * at startup and bind it to each transaction with an adapter.
 */
export class Outbox<M extends TopicMap> {
  readonly topics: M
  readonly table: OutboxTable
  readonly dialect: OutboxDialect
  /** The `tracing` option, handed to this outbox's relays too. */
  readonly tracing: OutboxTracing | undefined

  constructor(options: OutboxOptions<M>, dialect: OutboxDialect) {
    if (typeof options !== 'object' || options === null) {
      throw invalidArgument(
        'the outbox needs an options object: { topics: { orderCreated: defineTopic(...) } }',
      )
    }
    this.topics = validateTopicMap(options.topics)
    this.table = resolveTable(options)
    this.dialect = dialect
    this.tracing = checkTracing(options.tracing, 'outbox option')
  }

  /**
   * Typed producers bound to the app's transaction. Outbox topics are written with the
   * transaction; topics mapped with `outbox: false` go straight to `direct` (Kafka).
   */
  producers(adapter: TransactionAdapter, direct?: () => MessageTransport): TopicProducers<M> {
    this.#checkDialect(adapter)
    return this.#producers((topic) =>
      topic.outbox
        ? (records: OutboxRecord[]) => this.#store(adapter, records)
        : (records: OutboxRecord[]) => sendDirect(topic, records, direct),
    ) as TopicProducers<M>
  }

  /**
   * Typed producers that write at once, inside the transaction open on a synchronous driver's
   * handle (SQLite), and throw at once, so the surrounding transaction rolls back with them.
   */
  producersSync(adapter: SyncTransactionAdapter): SyncTopicProducers<M> {
    this.#checkDialect(adapter)
    return this.#producers(
      (topic) => (records: OutboxRecord[]) => {
        if (!topic.outbox) throw invalidArgument(`topic '${topic.name}' is mapped with outbox: false`)
        adapter.assertInTransaction()
        for (const statement of this.dialect.insert(this.table, records)) adapter.execute(statement)
      },
      false,
    ) as SyncTopicProducers<M>
  }

  #checkDialect(adapter: { readonly dialect: string }): void {
    if (adapter.dialect !== this.dialect.name) {
      throw invalidArgument(
        `this outbox speaks ${this.dialect.name} but the transaction is a ${adapter.dialect} connection; create the outbox with the ${adapter.dialect} adapter`,
      )
    }
  }

  /** One producer per topic around its `write`; `async` ones reject instead of throwing. */
  #producers(
    writer: (topic: Topic<unknown>) => (records: OutboxRecord[]) => unknown,
    async = true,
  ): Record<string, SyncTopicProducer<unknown>> {
    const producers: Record<string, SyncTopicProducer<unknown>> = {}
    // Read once per produce call, in the caller's async context (where its active span is).
    const traced = this.tracing?.headers?.bind(this.tracing)
    for (const [accessor, topic] of Object.entries(this.topics)) {
      const write = writer(topic)
      const produce = (message: unknown, options?: ProduceOptions) =>
        write([topic.toRecord(message, options, traced?.())])
      const produceMany = (messages: readonly unknown[], options?: ProduceOptions) => {
        if (!Array.isArray(messages)) {
          throw invalidArgument(
            `produceMany() on topic '${topic.name}' needs an array, got ${describe(messages)}`,
          )
        }
        if (messages.length === 0) return
        const context = traced?.()
        return write(messages.map((message) => topic.toRecord(message, options, context)))
      }
      // async so that validation and serialization errors reject the returned promise
      // instead of throwing synchronously from a function that returns a promise.
      producers[accessor] = (
        async
          ? {
              produce: async (message, options) => produce(message, options),
              produceMany: async (messages, options) => produceMany(messages, options),
            }
          : { produce, produceMany }
      ) as SyncTopicProducer<unknown>
    }
    return Object.freeze(producers)
  }

  async #store(adapter: TransactionAdapter, records: OutboxRecord[]): Promise<void> {
    const statements = this.dialect.insert(this.table, records)
    const first = statements[0]
    // A first statement that also tells whether a transaction is open saves the check its own
    // round trip (MySQL's key locks); nothing that could outlive the transaction runs before it.
    const checked = first?.checksTransaction === true && adapter.executeChecked !== undefined
    // The check may ask the database (MySQL's status flags): a session it lost is named too.
    try {
      if (checked && first !== undefined) await adapter.executeChecked?.(first)
      else await adapter.assertInTransaction()
    } catch (error) {
      throw this.#explain(error)
    }
    for (const statement of checked ? statements.slice(1) : statements) {
      try {
        await adapter.execute(statement)
      } catch (error) {
        throw this.#explain(error)
      }
    }
  }

  /**
   * A missing outbox table as `KE_NOT_MIGRATED`. Any other driver error stays the driver's own:
   * it happened in the app's transaction, whose retry logic (SQLSTATE 40001, errno 1213, an ORM's
   * error class) must keep recognising it; `isRetryable()` reads it with the dialect's table.
   */
  #explain(error: unknown): unknown {
    if (isKEntityError(error)) return error
    if (this.dialect.classifyFailure?.(error)?.code !== ErrorCodes.NOT_MIGRATED) return error
    return notMigrated(`${this.table.schema}.${this.table.table}`, error)
  }

  /**
   * Whether running the same work again can succeed: a `KEntityError`'s `retryable`, or for a
   * driver error, what this database's error table says (a deadlock, a serialization failure, a
   * lock timeout, a lost connection: true). Unknown errors: false.
   */
  isRetryable(error: unknown): boolean {
    if (isKEntityError(error)) return error.retryable
    return this.dialect.classifyFailure?.(error)?.retryable ?? false
  }
}

async function sendDirect(
  topic: Topic<unknown>,
  records: OutboxRecord[],
  direct: (() => MessageTransport) | undefined,
): Promise<void> {
  if (direct === undefined) {
    throw new KEntityError(
      ErrorCodes.NO_TRANSPORT,
      `topic '${topic.name}' is mapped with outbox: false and is sent straight to Kafka, but no Kafka connection was configured; pass kafka: { brokers: [...] } when creating the outbox`,
    )
  }
  await direct().send(records)
}

function validateTopicMap<M extends TopicMap>(topics: unknown): M {
  if (typeof topics !== 'object' || topics === null || Array.isArray(topics)) {
    throw invalidArgument(
      `'topics' must be an object mapping accessor names to topics, got ${describe(topics)}`,
    )
  }
  const entries = Object.entries(topics)
  if (entries.length === 0)
    throw invalidArgument(`'topics' is empty; map at least one topic with defineTopic()`)
  const byName = new Map<string, string>()
  const byCollisionKey = new Map<string, { accessor: string; name: string }>()
  for (const [accessor, topic] of entries) {
    if (RESERVED_ACCESSORS.has(accessor))
      throw invalidArgument(`'${accessor}' cannot be used as a topic accessor name`)
    if (!(topic instanceof Topic)) {
      throw invalidArgument(`topics.${accessor} must be created with defineTopic(), got ${describe(topic)}`)
    }
    const previous = byName.get(topic.name)
    if (previous !== undefined) {
      throw new KEntityError(
        ErrorCodes.INVALID_TOPIC,
        `Kafka topic '${topic.name}' is mapped twice (topics.${previous} and topics.${accessor}); map each topic once and reuse its accessor`,
      )
    }
    byName.set(topic.name, accessor)
    const key = topicCollisionKey(topic.name)
    const twin = byCollisionKey.get(key)
    if (twin !== undefined) {
      throw new KEntityError(
        ErrorCodes.INVALID_TOPIC,
        `Kafka topics '${twin.name}' (topics.${twin.accessor}) and '${topic.name}' (topics.${accessor}) differ only by '.' against '_', which Kafka treats as the same name and refuses to create both; rename one of them`,
      )
    }
    byCollisionKey.set(key, { accessor, name: topic.name })
  }
  return Object.freeze({ ...topics }) as M
}
