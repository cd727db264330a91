import { X509Certificate } from 'node:crypto'
import { createSecureContext, type ConnectionOptions as TLSConnectionOptions } from 'node:tls'
import { compatibilityPartitioner, Producer, type SASLOptions, stringSerializers } from '@platformatic/kafka'
import { errorChain } from '../../core/error-chain.ts'
import { describe, ErrorCodes, invalidArgument, KEntityError, WarningCodes } from '../../core/errors.ts'
import type { OutboxRecord } from '../../core/record.ts'
import type { MessageTransport, SendFailure, SendProgress } from '../../core/seams.ts'
import { checkRecordTopics, missingTopicMessage } from './topics.ts'

export interface KafkaOptions {
  /** Bootstrap brokers, e.g. `['127.0.0.1:9092']`. */
  brokers: string[]
  /** Client id shown in broker logs and quotas (default `k-entity`). */
  clientId?: string
  /**
   * Per-request timeout in ms (default 10000). A request unanswered that long closes its
   * connection and is retried on a new one, so a network partition that closes nothing is
   * reported after about requestTimeout × (retries + 1), and a connection it left dead costs one
   * requestTimeout after the network heals.
   */
  requestTimeout?: number
  /** How long opening one broker connection (TCP, TLS and SASL) may take, in ms (default 10000). */
  connectTimeout?: number
  /**
   * Retries of one send inside the client before the relay's own backoff takes over (default 3,
   * at least 2: the client turns 0 or 1 into "retry forever" for idempotent producers).
   */
  retries?: number
  /** Longest one send may take before it is abandoned and the producer recreated, in ms. */
  sendTimeout?: number
  /** Compression for produced batches (default none). */
  compression?: 'none' | 'gzip' | 'snappy' | 'lz4' | 'zstd'
  /**
   * Let the broker create a missing topic on the first send to it (default false). A topic made
   * that way silently gets the broker's default partitions and settings (often one partition);
   * declare partitions on the topic and call `outbox.ensureTopics()` (or relay `ensureTopics:
   * true`) instead. Off, a send to a missing topic fails, retryably, saying so.
   */
  autoCreateTopics?: boolean
  /**
   * Connect over TLS: `true` trusts the system's CAs (managed Kafka services), or an object with
   * PEM text (the file contents, not paths) as Node's `tls.connect` takes them.
   */
  tls?: boolean | KafkaTlsOptions
  /** SASL authentication; almost always used together with `tls`. */
  sasl?: KafkaSaslOptions
}

export interface KafkaTlsOptions {
  /** CA certificate(s) to trust instead of the system's, PEM. */
  ca?: string | Buffer | Array<string | Buffer>
  /** Client certificate chain for mutual TLS, PEM. */
  cert?: string | Buffer | Array<string | Buffer>
  /** Client private key for mutual TLS, PEM. */
  key?: string | Buffer | Array<string | Buffer>
  /** Passphrase of an encrypted `key`. */
  passphrase?: string
  /** Host name to verify the certificate against (SNI), when it differs from the broker address. */
  servername?: string
  /** Verify the broker's certificate (default true; false only for a local test broker). */
  rejectUnauthorized?: boolean
}

export type KafkaSaslOptions =
  | {
      mechanism: 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512'
      username: string
      password: string
    }
  | {
      mechanism: 'OAUTHBEARER'
      /** A token, or a function returning a fresh one (called for every new connection). */
      token: string | (() => string | Promise<string>)
    }

/** The validated options, with every default filled in. */
export interface ResolvedKafkaOptions {
  brokers: string[]
  clientId: string
  requestTimeout: number
  connectTimeout: number
  retries: number
  sendTimeout: number
  compression: 'none' | 'gzip' | 'snappy' | 'lz4' | 'zstd'
  autoCreateTopics: boolean
  tls: TLSConnectionOptions | undefined
  sasl: SASLOptions | undefined
}

/**
 * The connection part every @platformatic/kafka client (Producer, Admin, Consumer) takes: spread
 * it into the client's options so they all reach the cluster the same way.
 */
export interface KafkaClientBase {
  clientId: string
  bootstrapBrokers: string[]
  connectTimeout: number
  requestTimeout: number
  timeout: number
  retries: number
  retryDelay: number
  tls?: TLSConnectionOptions
  sasl?: SASLOptions
}

export const SASL_MECHANISMS = ['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512', 'OAUTHBEARER'] as const
const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g
const TLS_FIELDS = ['ca', 'cert', 'key', 'passphrase', 'servername', 'rejectUnauthorized']

const BROKER_ADDRESS = /^[^\s:/]+:\d{1,5}$/

export function validateKafkaOptions(options: unknown): ResolvedKafkaOptions {
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument(
      `kafka options must be an object like { brokers: ['127.0.0.1:9092'] }, got ${describe(options)}`,
    )
  }
  const { brokers, clientId, requestTimeout, connectTimeout, retries, compression, sendTimeout, tls, sasl } =
    options as KafkaOptions
  const { autoCreateTopics } = options as KafkaOptions
  if (!Array.isArray(brokers) || brokers.length === 0) {
    throw invalidArgument(
      `kafka.brokers must be a non-empty array of 'host:port' strings, got ${describe(brokers)}`,
    )
  }
  for (const broker of brokers) {
    if (typeof broker !== 'string' || !BROKER_ADDRESS.test(broker)) {
      throw invalidArgument(
        `kafka.brokers entry ${describe(broker)} is not 'host:port' (e.g. '127.0.0.1:9092')`,
      )
    }
  }
  if (clientId !== undefined && (typeof clientId !== 'string' || clientId.length === 0)) {
    throw invalidArgument(`kafka.clientId must be a non-empty string`)
  }
  for (const [name, value] of [
    ['requestTimeout', requestTimeout],
    ['connectTimeout', connectTimeout],
    ['retries', retries],
    ['sendTimeout', sendTimeout],
  ] as const) {
    if (value !== undefined && (typeof value !== 'number' || !Number.isInteger(value) || value < 0)) {
      throw invalidArgument(`kafka.${name} must be a non-negative integer, got ${describe(value)}`)
    }
  }
  if (retries !== undefined && retries < 2) {
    throw invalidArgument(
      `kafka.retries must be at least 2, got ${retries}: the idempotent producer would turn it into unlimited retries, and a send to a dead broker would never fail`,
    )
  }
  const algorithms = ['none', 'gzip', 'snappy', 'lz4', 'zstd']
  if (compression !== undefined && !algorithms.includes(compression)) {
    throw invalidArgument(
      `kafka.compression must be one of ${algorithms.join(', ')}, got ${describe(compression)}`,
    )
  }
  if (autoCreateTopics !== undefined && typeof autoCreateTopics !== 'boolean') {
    throw invalidArgument(`kafka.autoCreateTopics must be true or false, got ${describe(autoCreateTopics)}`)
  }
  const resolvedTimeout = requestTimeout ?? 10_000
  const resolvedRetries = retries ?? 3
  const resolved: ResolvedKafkaOptions = {
    brokers: [...brokers],
    clientId: clientId ?? 'k-entity',
    requestTimeout: resolvedTimeout,
    connectTimeout: connectTimeout ?? 10_000,
    retries: resolvedRetries,
    sendTimeout: sendTimeout ?? resolvedTimeout * (resolvedRetries + 1) + 5000,
    compression: compression ?? 'none',
    autoCreateTopics: autoCreateTopics ?? false,
    tls: validateTls(tls),
    sasl: validateSasl(sasl),
  }
  if (resolved.sasl !== undefined && resolved.tls === undefined) warnClearTextSecret(resolved.sasl.mechanism)
  resolvedOptions.add(resolved)
  return resolved
}

function validateTls(tls: unknown): TLSConnectionOptions | undefined {
  if (tls === undefined || tls === false) return undefined
  if (tls === true) return {}
  if (typeof tls !== 'object' || tls === null || Array.isArray(tls)) {
    throw invalidArgument(
      `kafka.tls must be true or an object like { ca: readFileSync('ca.pem') }, got ${describe(tls)}`,
    )
  }
  const unknown = Object.keys(tls).filter((name) => !TLS_FIELDS.includes(name))
  if (unknown.length > 0) {
    throw invalidArgument(
      `kafka.tls has unknown field(s) ${unknown.join(', ')}: the fields are ${TLS_FIELDS.join(', ')}`,
    )
  }
  const { ca, cert, key, passphrase, servername, rejectUnauthorized } = tls as KafkaTlsOptions
  for (const [name, value] of [
    ['ca', ca],
    ['cert', cert],
    ['key', key],
  ] as const) {
    if (value === undefined) continue
    const entries = Array.isArray(value) ? value : [value]
    for (const entry of entries) {
      // The value itself is never quoted: it may be a private key.
      if (typeof entry !== 'string' && !Buffer.isBuffer(entry)) {
        throw invalidArgument(
          `kafka.tls.${name} must be PEM text (a string or Buffer), got ${describe(entry)}`,
        )
      }
      if (!entry.toString('latin1').includes('-----BEGIN ')) {
        throw invalidArgument(
          `kafka.tls.${name} is not PEM text (no '-----BEGIN' line): pass the file's contents, e.g. readFileSync(path), not its path`,
        )
      }
    }
  }
  for (const [name, value] of [
    ['ca', ca],
    ['cert', cert],
  ] as const) {
    // Node skips a CA it cannot parse without a word; the broker's certificate would then be
    // refused at the first connection, far from the mistake.
    for (const entry of value === undefined ? [] : Array.isArray(value) ? value : [value]) {
      const blocks = entry.toString('latin1').match(PEM_CERTIFICATE) ?? []
      if (blocks.length === 0) {
        throw invalidArgument(`kafka.tls.${name} holds no '-----BEGIN CERTIFICATE-----' block`)
      }
      for (const block of blocks) {
        try {
          new X509Certificate(block)
        } catch (error) {
          throw invalidArgument(
            `kafka.tls.${name} holds a certificate that cannot be read (${errorText(error)})`,
          )
        }
      }
    }
  }
  if ((cert === undefined) !== (key === undefined)) {
    throw invalidArgument(
      `kafka.tls.${cert === undefined ? 'cert' : 'key'} is missing: a client certificate needs both cert and key`,
    )
  }
  if (passphrase !== undefined && typeof passphrase !== 'string') {
    throw invalidArgument(`kafka.tls.passphrase must be a string`)
  }
  if (passphrase !== undefined && key === undefined) {
    throw invalidArgument(
      `kafka.tls.passphrase is set but kafka.tls.key is not: the passphrase unlocks the key`,
    )
  }
  if (servername !== undefined && (typeof servername !== 'string' || servername.length === 0)) {
    throw invalidArgument(`kafka.tls.servername must be a non-empty host name, got ${describe(servername)}`)
  }
  if (rejectUnauthorized !== undefined && typeof rejectUnauthorized !== 'boolean') {
    throw invalidArgument(
      `kafka.tls.rejectUnauthorized must be a boolean, got ${describe(rejectUnauthorized)}`,
    )
  }
  const resolved: TLSConnectionOptions = {}
  if (ca !== undefined) resolved.ca = ca
  if (cert !== undefined) resolved.cert = cert
  if (key !== undefined) resolved.key = key
  if (passphrase !== undefined) resolved.passphrase = passphrase
  if (servername !== undefined) resolved.servername = servername
  if (rejectUnauthorized !== undefined) resolved.rejectUnauthorized = rejectUnauthorized
  try {
    // Loads the certificates and unlocks the key now, so a bad file or passphrase fails at startup.
    createSecureContext(resolved)
  } catch (error) {
    throw invalidArgument(
      `kafka.tls could not be loaded (${errorText(error)}): check that ca, cert and key are PEM and that passphrase unlocks key`,
    )
  }
  return resolved
}

const warnedClearText = new Set<string>()

/**
 * PLAIN sends the password and OAUTHBEARER the token as they are: without TLS anyone on the path
 * reads them. Allowed (a local SASL_PLAINTEXT listener is a real setup), but said once.
 */
function warnClearTextSecret(mechanism: string): void {
  if ((mechanism !== 'PLAIN' && mechanism !== 'OAUTHBEARER') || warnedClearText.has(mechanism)) return
  warnedClearText.add(mechanism)
  process.emitWarning(
    `kafka.sasl ${mechanism} without kafka.tls sends the ${mechanism === 'PLAIN' ? 'password' : 'token'} over the network unencrypted: set kafka.tls unless this is a local test broker`,
    { code: WarningCodes.SASL_WITHOUT_TLS },
  )
}

function validateSasl(sasl: unknown): SASLOptions | undefined {
  if (sasl === undefined) return undefined
  if (typeof sasl !== 'object' || sasl === null || Array.isArray(sasl)) {
    throw invalidArgument(
      `kafka.sasl must be an object like { mechanism: 'SCRAM-SHA-512', username, password }, got ${describe(sasl)}`,
    )
  }
  const { mechanism } = sasl as { mechanism?: unknown }
  if (typeof mechanism !== 'string' || !(SASL_MECHANISMS as readonly string[]).includes(mechanism)) {
    throw invalidArgument(
      `kafka.sasl.mechanism must be one of ${SASL_MECHANISMS.join(', ')}, got ${describe(mechanism)}`,
    )
  }
  const fields = mechanism === 'OAUTHBEARER' ? ['mechanism', 'token'] : ['mechanism', 'username', 'password']
  const unknown = Object.keys(sasl).filter((name) => !fields.includes(name))
  if (unknown.length > 0) {
    throw invalidArgument(
      `kafka.sasl has field(s) ${unknown.join(', ')} that ${mechanism} does not use: it takes ${fields.slice(1).join(' and ')}`,
    )
  }
  if (mechanism === 'OAUTHBEARER') {
    const { token } = sasl as { token?: unknown }
    if (typeof token === 'function') {
      const provider = token as () => unknown
      return {
        mechanism,
        // Checked per call: a provider answering undefined or an object would otherwise send
        // "Bearer undefined" and surface as a confusing authentication failure.
        token: async () => {
          const value = await provider()
          if (typeof value !== 'string' || value.length === 0) {
            throw invalidArgument(
              `the kafka.sasl.token provider must return a non-empty string, got ${value === '' ? 'an empty string' : value === null ? 'null' : typeof value}`,
            )
          }
          return value
        },
      }
    }
    if (typeof token !== 'string' || token.length === 0) {
      throw invalidArgument(
        `kafka.sasl.token must be a non-empty string or a function returning one, got ${token === undefined ? 'nothing' : typeof token === 'string' ? 'an empty string' : typeof token}`,
      )
    }
    return { mechanism, token }
  }
  const { username, password } = sasl as { username?: unknown; password?: unknown }
  if (typeof username !== 'string' || username.length === 0) {
    throw invalidArgument(
      `kafka.sasl.username is missing: ${mechanism} needs username and password, got ${describe(username)}`,
    )
  }
  if (typeof password !== 'string' || password.length === 0) {
    // Never describe() the password: only say what kind of value it was.
    throw invalidArgument(
      `kafka.sasl.password must be a non-empty string for ${mechanism} user ${JSON.stringify(username)}, got ${password === undefined ? 'nothing' : typeof password === 'string' ? 'an empty string' : typeof password}`,
    )
  }
  return { mechanism, username, password } as SASLOptions
}

/**
 * The connection part of any @platformatic/kafka client's options (Producer, Admin, Consumer):
 * client id, bootstrap brokers, TLS, SASL and timeouts, validated as `kafka` options are.
 */
export function kafkaClientBase(options: KafkaOptions | ResolvedKafkaOptions): KafkaClientBase {
  const resolved = isResolved(options) ? options : validateKafkaOptions(options)
  const base: KafkaClientBase = {
    clientId: resolved.clientId,
    bootstrapBrokers: [...resolved.brokers],
    connectTimeout: resolved.connectTimeout,
    requestTimeout: resolved.requestTimeout,
    timeout: resolved.requestTimeout,
    retries: resolved.retries,
    retryDelay: 250,
  }
  if (resolved.tls !== undefined) base.tls = resolved.tls
  if (resolved.sasl !== undefined) base.sasl = resolved.sasl
  return base
}

const resolvedOptions = new WeakSet<object>()

function isResolved(options: unknown): options is ResolvedKafkaOptions {
  return typeof options === 'object' && options !== null && resolvedOptions.has(options)
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

/**
 * The default transport, on @platformatic/kafka: idempotent producer with acks=all (so a
 * retried batch is not written twice and order per partition holds), and the Java client's
 * murmur2 partitioner so a key lands on the same partition as from Java or kafkajs producers.
 */
export class KafkaTransport implements MessageTransport {
  readonly #options: ResolvedKafkaOptions
  #producer: Producer<Buffer, Buffer, string, Buffer>
  #closed = false

  constructor(options: KafkaOptions) {
    this.#options = validateKafkaOptions(options)
    this.#producer = this.#createProducer()
  }

  /**
   * See `MessageTransport.landsWithinMs`: a send is abandoned after `sendTimeout`, and a
   * request already in a leader's log may still be committed once the in-sync replicas shrink
   * (`REPLICA_LAG_MS`), plus `LANDING_MARGIN_MS`. 50 s with the defaults.
   */
  get landsWithinMs(): number {
    return Math.max(this.#options.sendTimeout, REPLICA_LAG_MS) + LANDING_MARGIN_MS
  }

  #createProducer(): Producer<Buffer, Buffer, string, Buffer> {
    const resolved = this.#options
    return new Producer({
      ...kafkaClientBase(resolved),
      idempotent: true,
      acks: -1,
      partitioner: compatibilityPartitioner,
      autocreateTopics: resolved.autoCreateTopics,
      serializers: { headerKey: stringSerializers.headerKey },
    })
  }

  /**
   * One produce call per leader broker, all at once, so a broker that is gone (or a topic that is
   * missing) fails only its own partitions while the others are acknowledged; within a partition
   * the records are one record batch, written whole or not at all, in order. Resolves only when
   * every record was acknowledged; otherwise rejects, with the records Kafka did not take on the
   * error's `failed` (see `SendRejection`), except when Kafka refused the credentials.
   */
  async send(records: readonly OutboxRecord[], progress?: SendProgress): Promise<void> {
    if (this.#closed) throw new KEntityError(ErrorCodes.TRANSPORT_FAILED, 'the Kafka transport is closed')
    if (records.length === 0) return
    checkRecordTopics(records)
    const producer = this.#producer
    const compression = this.#options.compression
    let timer: NodeJS.Timeout | undefined
    let timedOut = false
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true
        reject(new Error(`no acknowledgement within sendTimeout (${this.#options.sendTimeout} ms)`))
      }, this.#options.sendTimeout)
    })
    deadline.catch(() => {})
    const failed: SendFailure[] = []
    let firstCause: unknown
    const fail = (indexes: number[], cause: unknown, count: number) => {
      if (failed.length === 0) firstCause = cause
      const failure = this.#classify(cause, records, indexes, count)
      for (const index of indexes) failed.push({ index, ...failure })
    }
    try {
      const topics = [...new Set(records.map((r) => r.topic))]
      // One metadata request per topic: a missing topic must not fail the others' (the client
      // fails a request for several topics as a whole).
      const metadata = await Promise.all(
        topics.map((topic) =>
          // The client's cache when it knows the topic (it refreshes stale metadata on the send
          // itself); a metadata request only for a topic it has not seen.
          (producer.currentMetadata?.topics.has(topic)
            ? Promise.resolve(producer.currentMetadata)
            : Promise.race([producer.metadata({ topics: [topic] }), deadline])
          ).then(
            (m) => {
              const found = m.topics.get(topic)
              return {
                topic,
                partitions: found?.partitionsCount ?? 0,
                leaders: found?.partitions.map((p) => p.leader) ?? [],
                error: undefined,
              }
            },
            (error: unknown) => ({ topic, partitions: 0, leaders: [] as number[], error }),
          ),
        ),
      )
      const unreachable = metadata.find(
        (m) => m.error !== undefined && connectionFailure(m.error, this.#options),
      )
      if (unreachable !== undefined && metadata.every((m) => m.error !== undefined)) {
        throw unreachable.error
      }
      const partitionsOf = new Map(metadata.map((m) => [m.topic, m]))
      const groups = new Map<string, { indexes: number[]; messages: PartitionedMessage[] }>()
      records.forEach((record, index) => {
        const topic = partitionsOf.get(record.topic) as (typeof metadata)[number]
        if (topic.error !== undefined || topic.partitions === 0) {
          fail(
            [index],
            topic.error ?? new Error(`no partitions known for topic '${record.topic}'`),
            records.length,
          )
          return
        }
        const key = record.key ?? undefined
        // The same partition the client's compatibilityPartitioner picks (Java's murmur2), fixed
        // here so that records can be grouped by the broker that leads their partition.
        const partition = compatibilityPartitioner(undefined as never, key as Buffer) % topic.partitions
        const headers = new Map<string, Buffer>()
        for (const [name, value] of record.headers) headers.set(name, value ?? EMPTY)
        const leader = topic.leaders[partition] ?? -1
        // One produce call per topic and leader broker. Not one per broker: the broker answers a
        // call when all its partitions are done, and a partition short of in-sync replicas keeps
        // it waiting for the request timeout (10 s), so one topic held back the others (seen with
        // min.insync.replicas 2 and 1 on one broker). Not one per partition: a broker serves a
        // connection's requests one at a time, and that was about 1.8 times slower.
        const id = leader >= 0 ? `${leader}\u0000${record.topic}` : `${record.topic}\u0000${partition}\u0000-`
        let group = groups.get(id)
        if (group === undefined) {
          group = { indexes: [], messages: [] }
          groups.set(id, group)
        }
        group.indexes.push(index)
        group.messages.push({
          topic: record.topic,
          key,
          value: record.value ?? undefined,
          headers,
          partition,
        })
      })
      await Promise.all(
        [...groups.values()].map((group) =>
          Promise.race([
            producer.send({ messages: group.messages, ...(compression === 'none' ? {} : { compression }) }),
            deadline,
          ]).then(
            () => reportAcknowledged(progress, group.indexes),
            (cause: unknown) => {
              // Partitions that the broker acknowledged in a response of this call were written,
              // whatever happened to the others of the same broker.
              const written = acknowledgedPartitions(cause)
              const unwritten = group.indexes.filter(
                (_, i) =>
                  !written.has(
                    `${(group.messages[i] as PartitionedMessage).topic}\u0000${(group.messages[i] as PartitionedMessage).partition}`,
                  ),
              )
              if (unwritten.length > 0) fail(unwritten, cause, records.length)
            },
          ),
        ),
      )
      if (timedOut && this.#producer === producer && !this.#closed) {
        // A producer stuck on a send cannot be trusted with the next one: start afresh. Whatever
        // it still delivers is sent again by the relay too: a duplicate, never a loss.
        this.#producer = this.#createProducer()
        producer.close(true).catch(() => {})
      }
      const refused = failed.find((f) => (f.error as KEntityError).code === ErrorCodes.KAFKA_AUTH_FAILED)
      if (refused !== undefined && failed.length === records.length) throw refused.error
      if (failed.length === records.length) {
        // Nothing was acknowledged: a rejection, as callers of a send expect, that still says what
        // Kafka answered for each record (see `SendRejection`).
        const error = this.#classify(
          firstCause,
          records,
          records.map((_, i) => i),
          records.length,
        ).error
        failed.sort((a, b) => a.index - b.index)
        throw Object.assign(error, { failed })
      }
    } catch (cause) {
      if (cause instanceof KEntityError) throw cause
      const { error, retryable } = this.#classify(
        cause,
        records,
        records.map((_, i) => i),
        records.length,
      )
      if (!retryable) throw error
      // No broker answered for any topic: Kafka as a whole is out, which is no record's fault.
      // Said per record so that the relay waits for Kafka instead of looking for a bad message
      // (which would use up attempts of the first few keys).
      throw Object.assign(error, {
        failed: records.map((_, index) => ({ index, error, retryable: true, countsAsAttempt: false })),
      })
    } finally {
      clearTimeout(timer)
    }
    if (failed.length > 0) {
      // Rejects, with the answer per record: a wrapper written for the all-or-nothing contract
      // (await send, return nothing) passes the rejection on, and the relay sends the whole batch
      // again (duplicates), instead of taking its silence as "all acknowledged" (loss).
      failed.sort((a, b) => a.index - b.index)
      const first = failed[0]?.error
      const error = new KEntityError(
        ErrorCodes.TRANSPORT_FAILED,
        `Kafka acknowledged ${records.length - failed.length} of ${records.length} messages, not the other ${failed.length}: ${first instanceof Error ? first.message : String(first)}`,
        { cause: first, retryable: true },
      )
      throw Object.assign(error, { failed })
    }
  }

  /**
   * What a failure of some of the records means (see `SendFailure`): a refusal no retry fixes,
   * one of the topic's own (missing, not authorized for it), or the cluster's trouble.
   */
  #classify(
    cause: unknown,
    records: readonly OutboxRecord[],
    indexes: number[],
    count: number,
  ): { error: KEntityError; retryable: boolean; countsAsAttempt: boolean; kafkaAnswered: boolean } {
    const connection = connectionFailure(cause, this.#options)
    const permanent = connection === undefined ? permanentKafkaError(cause) : undefined
    const concerned = indexes.map((i) => records[i] as OutboxRecord)
    const missing = connection === undefined ? missingTopicMessage(cause, concerned) : undefined
    const topicRefused = connection === undefined && hasKafkaError(cause, 'TOPIC_AUTHORIZATION_FAILED')
    const what = indexes.length === count ? `a batch of ${count}` : `${indexes.length} of a batch of ${count}`
    const error = new KEntityError(
      connection?.code ?? ErrorCodes.TRANSPORT_FAILED,
      `Kafka did not acknowledge ${what}: ${connection?.message ?? permanent ?? missing ?? (cause instanceof Error ? cause.message : String(cause))}`,
      { cause, retryable: permanent === undefined },
    )
    return {
      error,
      retryable: permanent === undefined,
      countsAsAttempt: permanent === undefined && (missing !== undefined || topicRefused),
      kafkaAnswered: connection === undefined && answeredWithErrorCode(cause),
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#producer.close(true)
  }
}

const EMPTY = Buffer.alloc(0)

interface PartitionedMessage {
  topic: string
  key: Buffer | undefined
  value: Buffer | undefined
  headers: Map<string, Buffer>
  partition: number
}

/**
 * `topic\0partition` of every partition that a produce response somewhere in the error's chain
 * answered without error: the broker wrote that partition's batch (acks=all), and a retry of it
 * by the idempotent producer is answered the same way, so it counts as acknowledged.
 */
function acknowledgedPartitions(error: unknown): Set<string> {
  const found = new Set<string>()
  for (const link of errorChain(error)) {
    const response = link.response as { responses?: unknown } | undefined
    if (!Array.isArray(response?.responses)) continue
    for (const topic of response.responses as Array<{ name?: unknown; partitionResponses?: unknown }>) {
      if (typeof topic?.name !== 'string' || !Array.isArray(topic.partitionResponses)) continue
      for (const partition of topic.partitionResponses as Array<{ index?: unknown; errorCode?: unknown }>) {
        if (partition?.errorCode === 0 && typeof partition.index === 'number')
          found.add(`${topic.name}\u0000${partition.index}`)
      }
    }
  }
  return found
}

/**
 * Whether a broker answered with a Kafka error code (NOT_ENOUGH_REPLICAS, NOT_LEADER_OR_FOLLOWER...)
 * somewhere in the error's causes: Kafka is up and refused that partition for now, as opposed to
 * a connection that failed or a request nobody answered.
 */
function answeredWithErrorCode(error: unknown): boolean {
  return errorChain(error).some((link) => typeof link.apiId === 'string')
}

/** Whether a Kafka error code appears anywhere in an error's causes. */
function hasKafkaError(error: unknown, apiId: string): boolean {
  return errorChain(error).some((link) => link.apiId === apiId)
}

/**
 * Kafka error codes that no retry can fix: the record itself or the topic is wrong. Everything
 * else (leader moved, broker unavailable, timeouts, throttling) is transient. Credentials and
 * permissions are not here: they are not the messages' fault (see `connectionFailure`), and a
 * missing topic ACL is retried per message by the relay's retry policy, since granting it fixes it.
 */
const PERMANENT_KAFKA_ERRORS = new Set([
  'MESSAGE_TOO_LARGE',
  'RECORD_LIST_TOO_LARGE',
  'INVALID_TOPIC_EXCEPTION',
  'INVALID_RECORD',
  'CORRUPT_MESSAGE',
  'UNSUPPORTED_FOR_MESSAGE_FORMAT',
  'INVALID_REQUIRED_ACKS',
  'POLICY_VIOLATION',
])

/** The first permanent Kafka error code found anywhere in an error's causes, if any. */
export function permanentKafkaError(error: unknown): string | undefined {
  for (const { apiId } of errorChain(error)) {
    if (typeof apiId === 'string' && PERMANENT_KAFKA_ERRORS.has(apiId)) return apiId
  }
  return undefined
}

/** What a failed send says about reaching Kafka at all, when that is what went wrong. */
export interface ConnectionFailure {
  code: typeof ErrorCodes.TRANSPORT_FAILED | typeof ErrorCodes.KAFKA_AUTH_FAILED
  message: string
}

type FindingKind =
  | 'auth'
  | 'authorization'
  | 'tls-certificate'
  | 'tls-host-name'
  | 'tls-handshake'
  | 'tls-required'
  | 'refused'
  | 'dns'
  | 'timeout'
  | 'request-timeout'
  | 'no-route'
  | 'network'

interface Finding {
  kind: FindingKind
  /** The broker address the client was connecting to, when the error chain names it. */
  address: string | undefined
  /** What the lowest error said, e.g. `ECONNREFUSED` or Node's certificate message. */
  detail: string
}

const AUTHORIZATION_ERRORS = new Set([
  'CLUSTER_AUTHORIZATION_FAILED',
  'TRANSACTIONAL_ID_AUTHORIZATION_FAILED',
])
const CONNECTION_ADDRESS = /^Connection to (.+?) (?:failed|timed out)\.$/
const SOCKET_ERRORS: Record<string, FindingKind> = {
  ECONNREFUSED: 'refused',
  ENOTFOUND: 'dns',
  EAI_AGAIN: 'dns',
  ETIMEDOUT: 'timeout',
  EHOSTUNREACH: 'no-route',
  ENETUNREACH: 'no-route',
}
/** Severity order: the first kind found is the one the message leads with. */
const KIND_ORDER: FindingKind[] = [
  'auth',
  'authorization',
  'tls-required',
  'tls-handshake',
  'tls-host-name',
  'tls-certificate',
  'dns',
  'refused',
  'no-route',
  'timeout',
  'request-timeout',
  'network',
]

/**
 * Reads the client's error chain (`cause`, `errors[]`) for why no broker could be used: which
 * addresses were tried and the network, TLS or SASL cause, and turns it into a message that says
 * how to fix it. Returns undefined when the brokers were reached and the failure is elsewhere.
 * Never quotes a password or token: the message is built from the options' mechanism and user
 * name and from the client's own error texts, which carry no credentials.
 */
export function connectionFailure(
  error: unknown,
  options: ResolvedKafkaOptions,
): ConnectionFailure | undefined {
  const findings: Finding[] = []
  collectFindings(error, undefined, findings, new Set())
  if (findings.length === 0) return undefined
  const kinds = new Set(findings.map((f) => f.kind))
  const lead = KIND_ORDER.find((kind) => kinds.has(kind)) as FindingKind
  const addresses = (kind?: FindingKind) => {
    const named = [
      ...new Set(
        findings.filter((f) => kind === undefined || f.kind === kind).flatMap((f) => f.address ?? []),
      ),
    ]
    return named.length > 0 ? named.join(', ') : options.brokers.join(', ')
  }
  const sasl = options.sasl
  if (lead === 'auth') {
    const finding = findings.find((f) => f.kind === 'auth') as Finding
    const who =
      sasl === undefined
        ? 'SASL authentication'
        : sasl.mechanism === 'OAUTHBEARER'
          ? 'OAUTHBEARER authentication'
          : `${sasl.mechanism} authentication of user ${JSON.stringify(sasl.username)}`
    const fix =
      sasl === undefined
        ? 'set kafka.sasl'
        : sasl.mechanism === 'OAUTHBEARER'
          ? 'check that kafka.sasl.token is a valid, unexpired token for this cluster'
          : `check kafka.sasl.username and kafka.sasl.password${sasl.mechanism.startsWith('SCRAM') ? `, and that the user has ${sasl.mechanism} credentials on the cluster (SCRAM-SHA-256 and SCRAM-SHA-512 credentials are separate)` : ''}; a managed service's new API key can take a minute to work`
    const said = finding.detail === 'SASL_AUTHENTICATION_FAILED' ? '' : ` (${finding.detail})`
    return {
      code: ErrorCodes.KAFKA_AUTH_FAILED,
      message: `${who} failed at ${addresses('auth')}${said}: ${fix}. Nothing is dead-lettered for this: the relay keeps the messages and retries with backoff`,
    }
  }
  if (lead === 'authorization') {
    const finding = findings.find((f) => f.kind === 'authorization') as Finding
    const who = sasl !== undefined && 'username' in sasl ? ` user ${JSON.stringify(sasl.username)}` : ''
    return {
      code: ErrorCodes.KAFKA_AUTH_FAILED,
      message: `the Kafka${who} is not authorized to produce (${finding.detail}): grant it Write on the topics and IdempotentWrite on the cluster (needed by brokers before 3.0 for the idempotent producer). Nothing is dead-lettered for this: the relay keeps the messages and retries with backoff`,
    }
  }
  const hints: Record<FindingKind, string> = {
    auth: '',
    authorization: '',
    'tls-required':
      'that listener speaks TLS: set kafka.tls (true for a managed service, { ca } for a private CA)',
    'tls-handshake':
      'the TLS handshake failed: that port may not speak TLS (a PLAINTEXT or SASL_PLAINTEXT listener): use the TLS listener, or leave kafka.tls out for a plaintext one',
    'tls-host-name':
      "the broker's certificate does not name the address connected to: use the host name on the certificate in kafka.brokers, or set kafka.tls.servername",
    'tls-certificate':
      "the broker's TLS certificate is not trusted: set kafka.tls.ca to the PEM of the CA that signed it (leave ca out for a service with a public certificate)",
    dns: 'the host name does not resolve: check kafka.brokers for a typo, and that this machine can resolve it',
    refused:
      'nothing accepts connections there: check the host and port in kafka.brokers and that the broker is running',
    'no-route':
      'there is no network route to the broker: check kafka.brokers and the network between here and the cluster',
    timeout: `no answer within kafka.connectTimeout (${options.connectTimeout} ms): a firewall, a private network this machine is not on, or a wrong port`,
    'request-timeout': `a connected broker did not answer within kafka.requestTimeout (${options.requestTimeout} ms): the network to it may be partitioned or the broker stalled; each retry uses a new connection`,
    network:
      'if this persists, check that kafka.brokers names a Kafka listener (and whether it needs kafka.tls) and the network in between',
  }
  const bootstrap =
    options.brokers.length === 1 ? (options.brokers[0] as string) : `one of ${options.brokers.join(', ')}`
  const tried = [
    ...new Map(
      findings.map((f) => [`${f.address} ${f.detail}`, `${f.address ?? bootstrap} (${f.detail})`]),
    ).values(),
  ]
  const fixes = KIND_ORDER.filter((kind) => kinds.has(kind)).map((kind) => hints[kind])
  const advertised = findings.some((f) => f.address !== undefined && !options.brokers.includes(f.address))
  if (advertised) {
    // The classic container mistake: bootstrap works, the address the broker hands out does not.
    fixes.push(
      "an address not in kafka.brokers is one the cluster advertised: check the broker's advertised.listeners are reachable from here",
    )
  }
  return {
    code: ErrorCodes.TRANSPORT_FAILED,
    // A dropped connection alone may be a broker restarting, not an unreachable cluster.
    message: `${lead === 'network' ? `the connection to Kafka was dropped (${errorText(error)})` : lead === 'request-timeout' ? 'Kafka stopped answering' : 'no Kafka broker could be reached'}, tried ${tried.join(', ')}: ${fixes.join('; ')}`,
  }
}

function collectFindings(
  error: unknown,
  address: string | undefined,
  into: Finding[],
  seen: Set<unknown>,
): void {
  if (typeof error !== 'object' || error === null || seen.has(error)) return
  seen.add(error)
  const { message, code, apiId, cause, errors } = error as {
    message?: unknown
    code?: unknown
    apiId?: unknown
    cause?: unknown
    errors?: unknown
  }
  const text = typeof message === 'string' ? message : ''
  const at = CONNECTION_ADDRESS.exec(text)?.[1] ?? address
  const inner = nested(cause, errors)
  const before = into.length
  const leaf = classify(code, apiId, text)
  if (leaf === undefined) {
    for (const next of inner) collectFindings(next, at, into, seen)
  }
  if (code === 'PLT_KFK_AUTHENTICATION' && !into.slice(before).some((f) => f.kind === 'auth')) {
    // The client's own verdict (a mechanism the broker lacks, a token provider that threw) when
    // the broker's answer below does not say more.
    const reason = cause instanceof Error && !(cause as { apiId?: unknown }).apiId ? `: ${cause.message}` : ''
    into.push({ kind: 'auth', address: at, detail: `${text}${reason}` })
  } else if (leaf !== undefined) {
    into.push({ kind: leaf[0], address: at, detail: leaf[1] })
  } else if (inner.length === 0) {
    if (code === 'PLT_KFK_TIMEOUT' && CONNECTION_ADDRESS.test(text)) {
      into.push({ kind: 'timeout', address: at, detail: 'timed out' })
    } else if ((code === 'PLT_KFK_TIMEOUT' || code === 'PLT_KFK_NETWORK') && text === 'Request timed out') {
      // Sent on an open connection and never answered: a partition that closes nothing (no RST,
      // no FIN) looks exactly like this. The client destroys that connection. (The client's
      // TimeoutError carries the network error's code.)
      into.push({ kind: 'request-timeout', address: at, detail: text })
    } else if (CONNECTION_ADDRESS.test(text)) {
      into.push({ kind: 'network', address: at, detail: text })
    } else if (code === 'PLT_KFK_NETWORK' || code === 'PLT_KFK_TIMEOUT') {
      // A connection that opened and then closed or went silent ("Connection closed").
      into.push({ kind: 'network', address: at, detail: text })
    } else if (address !== undefined && typeof code === 'string') {
      // Under a "Connection to … failed." the lowest error is the network cause, whatever it is.
      into.push({ kind: 'network', address: at, detail: `${code}: ${text}` })
    }
  }
}

/** The finding one error stands for by itself, without looking at its causes. */
function classify(code: unknown, apiId: unknown, text: string): [FindingKind, string] | undefined {
  if (apiId === 'SASL_AUTHENTICATION_FAILED' || apiId === 'UNSUPPORTED_SASL_MECHANISM') return ['auth', apiId]
  if (typeof apiId === 'string' && AUTHORIZATION_ERRORS.has(apiId)) return ['authorization', apiId]
  if (typeof code !== 'string') return undefined
  if (code === 'PLT_KFK_USER' && text === 'Broker requires TLS.') return ['tls-required', text]
  if (code === 'PLT_KFK_USER' && text.startsWith('TLS handshake failed')) return ['tls-handshake', text]
  const socket = SOCKET_ERRORS[code]
  if (socket !== undefined) return [socket, code]
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return ['tls-host-name', `${code}: ${text}`]
  if (/CERT|ISSUER|SELF_SIGNED|UNABLE_TO_VERIFY|^ERR_SSL_|^ERR_TLS_/.test(code)) {
    return ['tls-certificate', `${code}: ${text}`]
  }
  return undefined
}

function nested(cause: unknown, errors: unknown): unknown[] {
  return [cause, ...(Array.isArray(errors) ? errors : [])].filter((e) => e !== undefined)
}

/**
 * A produce request that timed out (on the client, or in the leader's wait for acks=all) is not
 * undone: its records are in the leader's log and are committed once the in-sync replicas shrink,
 * at most `replica.lag.time.max.ms` (30 s by default) after the replica that holds them back
 * stopped fetching, which is before the send started waiting for it.
 */
const REPLICA_LAG_MS = 30_000
/** For the clocks of relay and database, and a controller slow to move a leader. */
const LANDING_MARGIN_MS = 5000

/** Tells the caller a produce call's records were acknowledged; a faulty callback must not fail the send. */
function reportAcknowledged(progress: SendProgress | undefined, indexes: number[]): void {
  if (progress === undefined) return
  try {
    progress.acknowledged(indexes)
  } catch {
    // The send's own result still says everything; the report is only a head start.
  }
}

export function createKafkaTransport(options: KafkaOptions): KafkaTransport {
  return new KafkaTransport(options)
}

/** What users pass as `kafka`: connection options, or a transport of their own. */
export type KafkaSetting = KafkaOptions | MessageTransport

export function isTransport(value: unknown): value is MessageTransport {
  return typeof value === 'object' && value !== null && typeof (value as MessageTransport).send === 'function'
}

/** Validates eagerly so a typo in the broker list fails at startup, not at the first send. */
export function checkKafkaSetting(setting: unknown): KafkaSetting | undefined {
  if (setting === undefined || isTransport(setting)) return setting
  validateKafkaOptions(setting)
  return setting as KafkaOptions
}

/**
 * A transport created on first use from a setting, and closed only if it created it (a
 * user-supplied transport belongs to the user).
 */
export class LazyTransport {
  readonly #setting: KafkaSetting | undefined
  readonly #what: string
  #transport: MessageTransport | undefined

  constructor(setting: KafkaSetting | undefined, what: string) {
    this.#setting = checkKafkaSetting(setting)
    this.#what = what
  }

  get(): MessageTransport {
    if (this.#transport) return this.#transport
    if (this.#setting === undefined) {
      throw new KEntityError(
        ErrorCodes.NO_TRANSPORT,
        `${this.#what} needs Kafka, but no kafka option was given: pass kafka: { brokers: ['host:9092'] }`,
      )
    }
    this.#transport = isTransport(this.#setting) ? this.#setting : new KafkaTransport(this.#setting)
    return this.#transport
  }

  async close(): Promise<void> {
    const transport = this.#transport
    this.#transport = undefined
    if (transport && !isTransport(this.#setting)) await transport.close()
  }
}

/** Declared topics: create the missing ones, report how existing ones differ (see topics.ts). */
export {
  type CreatedTopic,
  type EnsureTopicsOptions,
  type EnsureTopicsReport,
  ensureTopics,
  type OutboxEnsureTopicsOptions,
  type TopicDeclaration,
  type TopicMismatch,
} from './topics.ts'
