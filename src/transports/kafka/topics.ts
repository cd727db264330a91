import { Admin, ConfigResourceTypes } from '@platformatic/kafka'
import { errorChain } from '../../core/error-chain.ts'
import { describe, ErrorCodes, invalidArgument, KEntityError } from '../../core/errors.ts'
import type { OutboxRecord } from '../../core/record.ts'
import { Topic, validateTopicName } from '../../core/topic.ts'
import { type KafkaOptions, kafkaClientBase } from './index.ts'

/** What `ensureTopics` needs to know of a topic; a `defineTopic()` result is one. */
export interface TopicDeclaration {
  name: string
  partitions?: number | undefined
  replicationFactor?: number | undefined
  configs?: Readonly<Record<string, string>> | undefined
}

export interface EnsureTopicsOptions {
  /** Create the topics that do not exist (default true); false only checks and reports. */
  create?: boolean
}

export interface CreatedTopic {
  topic: string
  /** The partitions and replicas it got; the broker's defaults where nothing was declared. */
  partitions: number
  replicationFactor: number
  /** Settings left to the broker because the topic did not declare them. */
  brokerDefaults: Array<'partitions' | 'replicationFactor'>
}

export interface TopicMismatch {
  topic: string
  /** `partitions`, `replicationFactor`, or a config name such as `retention.ms`. */
  field: string
  declared: string | number
  /** What the cluster has; `null` for a config the broker does not disclose (sensitive). */
  actual: string | number | null
}

export interface EnsureTopicsReport {
  /** Topics this call created. */
  created: CreatedTopic[]
  /** Topics that existed and match their declaration. */
  ok: string[]
  /** Differences between existing topics and their declarations; existing topics are never altered. */
  mismatched: TopicMismatch[]
  /** Topics that do not exist and were not created (`create: false`). */
  missing: string[]
}

/** Longest wait for a topic just created to have a leader for every partition, in ms. */
const READY_TIMEOUT_MS = 15_000

/**
 * Creates the declared topics that do not exist yet, with their declared partitions, replication
 * factor and configs, and reports how existing ones differ from their declarations. An existing
 * topic is never altered: adding partitions moves keys to other partitions (breaking per-key
 * order), and the other differences are an operator's call.
 */
export async function ensureTopics(
  kafka: KafkaOptions,
  topics: readonly TopicDeclaration[] | Readonly<Record<string, TopicDeclaration>>,
  options: EnsureTopicsOptions = {},
): Promise<EnsureTopicsReport> {
  const declared = checkDeclarations(topics)
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument(`ensureTopics() options must be an object like { create: false }`)
  }
  if (options.create !== undefined && typeof options.create !== 'boolean') {
    throw invalidArgument(`ensureTopics(): 'create' must be true or false, got ${describe(options.create)}`)
  }
  const create = options.create ?? true
  const admin = new Admin(adminOptions(kafka))
  const report: EnsureTopicsReport = { created: [], ok: [], mismatched: [], missing: [] }
  try {
    const existing = new Set(await step('list the topics', () => admin.listTopics()))
    const toCheck: TopicDeclaration[] = []
    for (const topic of declared) {
      if (existing.has(topic.name)) toCheck.push(topic)
      else if (!create) report.missing.push(topic.name)
      else {
        const created = await createTopic(admin, topic)
        if (created) report.created.push(created)
        // Another process created it between our list and our create: check it like any other.
        else toCheck.push(topic)
      }
    }
    if (report.created.length > 0) {
      await waitForLeaders(
        admin,
        report.created.map((c) => c.topic),
      )
    }
    if (toCheck.length > 0) await compare(admin, toCheck, report)
  } finally {
    await admin.close().catch(() => {})
  }
  return report
}

/**
 * The connection part of the client options; one place, so the Admin reaches the cluster exactly
 * as the producer does (TLS, SASL, timeouts).
 */
function adminOptions(kafka: KafkaOptions) {
  return kafkaClientBase(kafka)
}

function checkDeclarations(
  topics: readonly TopicDeclaration[] | Readonly<Record<string, TopicDeclaration>> | unknown,
): TopicDeclaration[] {
  if (typeof topics !== 'object' || topics === null) {
    throw invalidArgument(
      `ensureTopics() needs the topics to ensure: an array of defineTopic() results (or a topic map), got ${describe(topics)}`,
    )
  }
  const list = Array.isArray(topics) ? topics : Object.values(topics)
  const byName = new Map<string, TopicDeclaration>()
  for (const topic of list as unknown[]) {
    if (typeof topic !== 'object' || topic === null) {
      throw invalidArgument(
        `ensureTopics(): every topic must be a defineTopic() result, got ${describe(topic)}`,
      )
    }
    // A plain declaration is checked as defineTopic() checks its options.
    const { name, partitions, replicationFactor, configs } =
      topic instanceof Topic ? topic : new Topic(pickDeclaration(topic as TopicDeclaration))
    const declaration = { name, partitions, replicationFactor, configs }
    const previous = byName.get(name)
    if (previous !== undefined && !sameDeclaration(previous, declaration)) {
      throw invalidArgument(
        `ensureTopics(): topic '${name}' is declared twice with different partitions, replicationFactor or configs; declare it once`,
      )
    }
    byName.set(name, declaration)
  }
  return [...byName.values()]
}

function pickDeclaration({ name, partitions, replicationFactor, configs }: TopicDeclaration) {
  return { name, partitions, replicationFactor, configs }
}

function sameDeclaration(a: TopicDeclaration, b: TopicDeclaration): boolean {
  return (
    a.partitions === b.partitions &&
    a.replicationFactor === b.replicationFactor &&
    JSON.stringify(Object.entries(a.configs ?? {}).sort()) ===
      JSON.stringify(Object.entries(b.configs ?? {}).sort())
  )
}

/** Returns undefined when the topic already exists (created meanwhile by someone else). */
async function createTopic(admin: Admin, topic: TopicDeclaration): Promise<CreatedTopic | undefined> {
  const configs = Object.entries(topic.configs ?? {}).map(([name, value]) => ({ name, value }))
  try {
    const [created] = await admin.createTopics({
      topics: [topic.name],
      ...(topic.partitions === undefined ? {} : { partitions: topic.partitions }),
      ...(topic.replicationFactor === undefined ? {} : { replicas: topic.replicationFactor }),
      configs,
    })
    const brokerDefaults: CreatedTopic['brokerDefaults'] = []
    if (topic.partitions === undefined) brokerDefaults.push('partitions')
    if (topic.replicationFactor === undefined) brokerDefaults.push('replicationFactor')
    return {
      topic: topic.name,
      partitions: created?.partitions ?? topic.partitions ?? -1,
      replicationFactor: created?.replicas ?? topic.replicationFactor ?? -1,
      brokerDefaults,
    }
  } catch (cause) {
    if (kafkaErrorIds(cause).has('TOPIC_ALREADY_EXISTS')) return undefined
    throw setupError(`create topic '${topic.name}'`, cause)
  }
}

/**
 * A created topic takes a moment to reach every broker's metadata; until then a send to it fails
 * with an unknown topic. Waiting here keeps the first send after ensureTopics() clean.
 */
async function waitForLeaders(admin: Admin, names: string[]): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS
  for (;;) {
    try {
      const metadata = await admin.metadata({ topics: names, forceUpdate: true })
      const ready = names.every((name) => {
        const topic = metadata.topics.get(name)
        return (
          topic !== undefined && topic.partitions.length > 0 && topic.partitions.every((p) => p.leader >= 0)
        )
      })
      if (ready) return
    } catch (error) {
      if (Date.now() > deadline) throw setupError(`read the metadata of ${names.join(', ')}`, error)
    }
    if (Date.now() > deadline) return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

async function compare(admin: Admin, topics: TopicDeclaration[], report: EnsureTopicsReport): Promise<void> {
  const names = topics.map((t) => t.name)
  const metadata = await step(`read the metadata of ${names.join(', ')}`, () =>
    admin.metadata({ topics: names, forceUpdate: true }),
  )
  const withConfigs = topics.filter((t) => Object.keys(t.configs ?? {}).length > 0)
  const actualConfigs = new Map<string, Map<string, string | null>>()
  if (withConfigs.length > 0) {
    const described = await step(`read the configs of ${withConfigs.map((t) => t.name).join(', ')}`, () =>
      admin.describeConfigs({
        resources: withConfigs.map((t) => ({
          resourceType: ConfigResourceTypes.TOPIC,
          resourceName: t.name,
          configurationKeys: Object.keys(t.configs ?? {}),
        })),
      }),
    )
    for (const resource of described) {
      actualConfigs.set(
        resource.resourceName,
        new Map(resource.configs.map((c) => [c.name, c.value ?? null])),
      )
    }
  }
  for (const topic of topics) {
    const before = report.mismatched.length
    const mismatch = (field: string, declared: string | number, actual: string | number | null) =>
      report.mismatched.push({ topic: topic.name, field, declared, actual })
    const meta = metadata.topics.get(topic.name)
    if (meta === undefined) {
      throw new KEntityError(
        ErrorCodes.TOPIC_SETUP_FAILED,
        `Kafka listed topic '${topic.name}' but returned no metadata for it; try again`,
        { retryable: true },
      )
    }
    if (topic.partitions !== undefined && meta.partitionsCount !== topic.partitions) {
      mismatch('partitions', topic.partitions, meta.partitionsCount)
    }
    const replicas = meta.partitions[0]?.replicas.length
    if (
      topic.replicationFactor !== undefined &&
      replicas !== undefined &&
      replicas !== topic.replicationFactor
    ) {
      mismatch('replicationFactor', topic.replicationFactor, replicas)
    }
    const configs = actualConfigs.get(topic.name)
    for (const [name, value] of Object.entries(topic.configs ?? {})) {
      const actual = configs?.get(name)
      if (actual === undefined) mismatch(name, value, null)
      else if (!sameConfigValue(value, actual)) mismatch(name, value, actual)
    }
    if (report.mismatched.length === before) report.ok.push(topic.name)
  }
}

/** List-valued configs (`cleanup.policy`) compare as sets: 'compact,delete' is 'delete,compact'. */
function sameConfigValue(declared: string, actual: string | null): boolean {
  if (actual === null) return false
  const normalise = (value: string) =>
    value
      .split(',')
      .map((part) => part.trim())
      .sort()
      .join(',')
  return normalise(declared) === normalise(actual)
}

async function step<T>(what: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run()
  } catch (cause) {
    throw setupError(what, cause)
  }
}

/** Kafka error codes that trying again will not fix: the request or the rights are wrong. */
const PERMANENT_SETUP_ERRORS = new Set([
  'INVALID_PARTITIONS',
  'INVALID_REPLICATION_FACTOR',
  'INVALID_REPLICA_ASSIGNMENT',
  'INVALID_CONFIG',
  'INVALID_TOPIC_EXCEPTION',
  'INVALID_REQUEST',
  'POLICY_VIOLATION',
  'TOPIC_AUTHORIZATION_FAILED',
  'CLUSTER_AUTHORIZATION_FAILED',
  'SASL_AUTHENTICATION_FAILED',
])

function setupError(what: string, cause: unknown): KEntityError {
  const ids = kafkaErrorIds(cause)
  const permanent = [...ids.keys()].find((id) => PERMANENT_SETUP_ERRORS.has(id))
  const detail =
    [...ids].map(([id, text]) => (text ? `${id} (${text})` : id)).join(', ') ||
    (cause instanceof Error ? cause.message : String(cause))
  const hint =
    ids.has('INVALID_REPLICATION_FACTOR') || ids.has('INVALID_PARTITIONS') || ids.has('INVALID_CONFIG')
      ? ': check the topic declaration against the cluster (a replicationFactor above the number of brokers, or an unknown config name or value)'
      : ids.has('TOPIC_AUTHORIZATION_FAILED') || ids.has('CLUSTER_AUTHORIZATION_FAILED')
        ? ': the Kafka user lacks the right to create or describe topics; create them with your Kafka tooling instead'
        : ''
  return new KEntityError(ErrorCodes.TOPIC_SETUP_FAILED, `could not ${what}: ${detail}${hint}`, {
    cause,
    retryable: permanent === undefined,
  })
}

/**
 * Every Kafka error id (`apiId`, e.g. `TOPIC_ALREADY_EXISTS`) anywhere in an error's causes, with
 * the broker's own explanation when it sent one.
 */
function kafkaErrorIds(error: unknown): Map<string, string | undefined> {
  const found = new Map<string, string | undefined>()
  for (const { apiId, serverErrorMessage } of errorChain(error)) {
    if (typeof apiId !== 'string') continue
    found.set(
      apiId,
      typeof serverErrorMessage === 'string' && serverErrorMessage ? serverErrorMessage : undefined,
    )
  }
  return found
}

/**
 * Refuses a batch holding a record whose topic Kafka must never see (an invalid or reserved name,
 * from a row written to the outbox table by hand or by an older version): the Kafka client fails
 * on such names inside a network callback, out of reach of any promise. Permanent, so the relay
 * isolates the record and dead-letters it while the others go on.
 */
export function checkRecordTopics(records: readonly OutboxRecord[]): void {
  for (const record of records) {
    try {
      validateTopicName(record.topic)
    } catch (error) {
      throw new KEntityError(
        ErrorCodes.INVALID_TOPIC,
        `the message was not sent to Kafka: ${(error as Error).message}`,
        { cause: error, retryable: false },
      )
    }
  }
}

/**
 * A clearer text for a send that failed because a topic does not exist, or undefined when that
 * is not why it failed. Still retryable: the topic may be created later.
 */
export function missingTopicMessage(error: unknown, records: readonly OutboxRecord[]): string | undefined {
  const found = findUnknownTopic(error)
  if (found === undefined) return undefined
  const topic = found === 'unknown' ? [...new Set(records.map((r) => r.topic))].join("' or '") : found
  return `Kafka topic '${topic}' does not exist and was not created on the send (kafka.autoCreateTopics is off, or the broker's auto.create.topics.enable is false): declare it with defineTopic({ name: '${topic}', partitions: ... }) and call outbox.ensureTopics() (or pass ensureTopics: true to relay()), or create it with your Kafka tooling, or set kafka.autoCreateTopics: true; the messages stay in the outbox and are retried`
}

function findUnknownTopic(error: unknown): string | undefined {
  for (const { message } of errorChain(error)) {
    // The client's own wording when the metadata request finds no such topic ("Unknown topic NAME.");
    // a produce response's UNKNOWN_TOPIC_OR_PARTITION is left alone: it also means a moved partition.
    const match = typeof message === 'string' ? /^Unknown topic (.+)\.$/.exec(message) : null
    if (match?.[1] !== undefined) return match[1]
  }
  return undefined
}

export interface OutboxEnsureTopicsOptions extends EnsureTopicsOptions {
  /** Kafka to connect to; defaults to the outbox's `kafka` option (needed when that is a transport object). */
  kafka?: KafkaOptions
}

/**
 * `outbox.ensureTopics()`: every topic of the outbox's topic map (outbox and direct ones), with
 * the outbox's Kafka options unless others are given.
 */
export async function ensureOutboxTopics(
  topics: Readonly<Record<string, TopicDeclaration>>,
  setting: KafkaOptions | { send: unknown } | undefined,
  options: OutboxEnsureTopicsOptions = {},
): Promise<EnsureTopicsReport> {
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument(
      `ensureTopics() options must be an object like { create: false } or { kafka: { brokers: [...] } }, got ${describe(options)}`,
    )
  }
  const { kafka, ...rest } = options
  return await ensureTopics(kafkaForTopics(kafka ?? setting, 'ensureTopics()'), topics, rest)
}

/** The Kafka options to create topics with; a transport object has none to connect with. */
export function kafkaForTopics(setting: unknown, where: string): KafkaOptions {
  if (setting === undefined) {
    throw new KEntityError(
      ErrorCodes.NO_TRANSPORT,
      `${where} needs Kafka, but no kafka option was given: pass kafka: { brokers: ['host:9092'] } to the outbox (or to ${where})`,
    )
  }
  if (
    typeof setting === 'object' &&
    setting !== null &&
    typeof (setting as { send?: unknown }).send === 'function'
  ) {
    throw invalidArgument(
      `${where} needs Kafka connection options, but the outbox's kafka is a transport object, which cannot create topics; pass them: ensureTopics({ kafka: { brokers: ['host:9092'] } }), or create the topics with your Kafka tooling`,
    )
  }
  kafkaClientBase(setting as KafkaOptions)
  return setting as KafkaOptions
}
