import assert from 'node:assert/strict'
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { after, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { Admin, ConfigResourceTypes } from '@platformatic/kafka'
import pg from 'pg'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { createNodeSqliteOutbox } from '../src/adapters/node-sqlite/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { defineTopic, KEntityError, type RelayEvent } from '../src/index.ts'
import { readTopic } from '../src/testing/index.ts'
import { KafkaTransport } from '../src/transports/kafka/index.ts'
import { ensureTopics } from '../src/transports/kafka/topics.ts'
import {
  countRows,
  createTopic,
  DATABASE_URL,
  dropSchema,
  kafkaBrokers,
  uniqueName,
  waitFor,
  withClient,
} from './support/env.ts'

const brokers = kafkaBrokers()
/** What the library uses by default: no topic is created by a send. */
const kafka = { brokers, autoCreateTopics: false }
const schemas: string[] = []
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4 })

async function withAdmin<R>(fn: (admin: Admin) => Promise<R>): Promise<R> {
  const admin = new Admin({ clientId: 'k-entity-topics-test', bootstrapBrokers: brokers })
  try {
    return await fn(admin)
  } finally {
    await admin.close()
  }
}

async function topicState(name: string, configNames: string[]) {
  return withAdmin(async (admin) => {
    const metadata = await admin.metadata({ topics: [name], forceUpdate: true })
    const topic = metadata.topics.get(name)
    assert.ok(topic, `topic ${name} exists`)
    const [described] = await admin.describeConfigs({
      resources: [
        { resourceType: ConfigResourceTypes.TOPIC, resourceName: name, configurationKeys: configNames },
      ],
    })
    const configs: Record<string, string | null | undefined> = {}
    for (const config of described?.configs ?? []) configs[config.name] = config.value
    return { partitions: topic.partitionsCount, replicas: topic.partitions[0]?.replicas.length, configs }
  })
}

async function topicExists(name: string): Promise<boolean> {
  return withAdmin(async (admin) => (await admin.listTopics()).includes(name))
}

async function newSchema(): Promise<string> {
  const schema = uniqueName('ke_topics')
  schemas.push(schema)
  return schema
}

describe('declared topics against a real broker', () => {
  after(async () => {
    await pool.end()
    for (const schema of schemas) await dropSchema(schema)
  })

  it('creates a missing topic with its declared partitions and configs, then finds it as declared', async () => {
    const name = uniqueName('ke_created')
    const configs = { 'retention.ms': '3600000', 'cleanup.policy': 'compact', 'max.message.bytes': '2000000' }
    const topic = defineTopic({ name, partitions: 6, configs })
    const report = await ensureTopics(kafka, [topic])
    assert.deepEqual(report, {
      created: [{ topic: name, partitions: 6, replicationFactor: 1, brokerDefaults: ['replicationFactor'] }],
      ok: [],
      mismatched: [],
      missing: [],
    })
    const state = await topicState(name, Object.keys(configs))
    assert.equal(state.partitions, 6)
    assert.equal(state.replicas, 1)
    assert.deepEqual(state.configs, configs)
    const again = await ensureTopics(kafka, [topic])
    assert.deepEqual(again, { created: [], ok: [name], mismatched: [], missing: [] })
  })

  it('reports how an existing topic differs from its declaration, and never alters it', async () => {
    const name = uniqueName('ke_existing')
    await createTopic(name, 1)
    const topic = defineTopic({
      name,
      partitions: 3,
      replicationFactor: 1,
      configs: { 'retention.ms': '3600000' },
    })
    const before = await topicState(name, ['retention.ms'])
    const report = await ensureTopics(kafka, [topic])
    assert.deepEqual(report.created, [])
    assert.deepEqual(report.ok, [])
    assert.deepEqual(report.mismatched, [
      { topic: name, field: 'partitions', declared: 3, actual: 1 },
      { topic: name, field: 'retention.ms', declared: '3600000', actual: before.configs['retention.ms'] },
    ])
    assert.notEqual(before.configs['retention.ms'], '3600000')
    assert.deepEqual(await topicState(name, ['retention.ms']), before, 'the topic is unchanged')
  })

  it('with create: false, only reports a missing topic', async () => {
    const name = uniqueName('ke_missing')
    const report = await ensureTopics(kafka, [defineTopic({ name, partitions: 2 })], { create: false })
    assert.deepEqual(report, { created: [], ok: [], mismatched: [], missing: [name] })
    assert.equal(await topicExists(name), false)
  })

  it('refuses __consumer_offsets when the topic is defined, and in a raw declaration', async () => {
    assert.throws(
      () => defineTopic({ name: '__consumer_offsets' }),
      (error: unknown) =>
        error instanceof KEntityError && error.code === 'KE_INVALID_TOPIC' && /reserved/.test(error.message),
    )
    await assert.rejects(ensureTopics(kafka, [{ name: '__consumer_offsets', partitions: 1 }]), /reserved/)
  })

  it('outbox.ensureTopics() uses the outbox kafka options; a transport object needs options given', async () => {
    const name = uniqueName('ke_facade')
    const topics = { events: defineTopic({ name, partitions: 2 }) }
    const outbox = createPgOutbox({ topics, schema: await newSchema(), kafka })
    const report = await outbox.ensureTopics()
    assert.deepEqual(
      report.created.map((c) => [c.topic, c.partitions]),
      [[name, 2]],
    )
    const transport = { send: async () => {}, close: async () => {} }
    const custom = createPgOutbox({ topics, schema: await newSchema(), kafka: transport })
    await assert.rejects(custom.ensureTopics(), /kafka is a transport object, which cannot create topics/)
    assert.deepEqual((await custom.ensureTopics({ kafka })).ok, [name])
  })

  it('the MySQL and SQLite outboxes ensure their topics too', async () => {
    const mysqlTopic = uniqueName('ke_mysql_facade')
    const sqliteTopic = uniqueName('ke_sqlite_facade')
    const mysql = createMysqlOutbox({
      topics: { a: defineTopic({ name: mysqlTopic, partitions: 3 }) },
      kafka,
    })
    const sqlite = createNodeSqliteOutbox({
      topics: { a: defineTopic({ name: sqliteTopic, partitions: 2 }) },
      kafka,
    })
    assert.deepEqual(
      (await mysql.ensureTopics()).created.map((c) => [c.topic, c.partitions]),
      [[mysqlTopic, 3]],
    )
    assert.deepEqual(
      (await sqlite.ensureTopics()).created.map((c) => [c.topic, c.partitions]),
      [[sqliteTopic, 2]],
    )
  })

  it('relay ensureTopics: true keeps retrying a topic Kafka refuses to create, and claims nothing meanwhile', async (t) => {
    const name = uniqueName('ke_refused')
    const schema = await newSchema()
    // One broker cannot hold three replicas.
    const outbox = createPgOutbox({
      topics: { events: defineTopic({ name, replicationFactor: 3 }) },
      schema,
      kafka,
    })
    await outbox.migrate(DATABASE_URL)
    await outbox.transaction(pool, (_client, topics) => topics.events.produce('waiting'))
    const errors: Extract<RelayEvent, { type: 'error' }>[] = []
    const relay = outbox.relay({
      connection: DATABASE_URL,
      ensureTopics: true,
      retryBackoff: { initial: 100, max: 200 },
      onEvent: (event) => {
        if (event.type === 'error') errors.push(event)
        if (event.type === 'delivered' || event.type === 'topics')
          assert.fail(`unexpected ${event.type} event`)
      },
    })
    t.after(() => relay.stop())
    await relay.start()
    await waitFor(() => errors.length >= 3, { what: 'three failed attempts' })
    await relay.stop()
    for (const event of errors) {
      assert.equal(event.stage, 'connect')
      assert.ok(event.error instanceof KEntityError)
      assert.equal(event.error.code, 'KE_TOPIC_SETUP_FAILED')
      assert.match(
        event.error.message,
        new RegExp(`could not create topic '${name}': INVALID_REPLICATION_FACTOR`),
      )
    }
    assert.equal(await countRows(schema), 1, 'the message waits in the outbox')
    assert.equal(await topicExists(name), false)
  })

  it('relay ensureTopics: true creates the topic before its first claim, then delivers', async (t) => {
    const name = uniqueName('ke_relay_ensure')
    const schema = await newSchema()
    const events = defineTopic<{ id: number }>({ name, partitions: 4, key: (m) => String(m.id % 5) })
    const outbox = createPgOutbox({ topics: { events }, schema, kafka })
    await outbox.migrate(DATABASE_URL)
    await outbox.transaction(pool, (_client, topics) =>
      topics.events.produceMany(Array.from({ length: 20 }, (_, id) => ({ id }))),
    )
    const seen: RelayEvent[] = []
    const relay = outbox.relay({
      connection: DATABASE_URL,
      ensureTopics: true,
      pollingInterval: 50,
      onEvent: (event) => seen.push(event),
    })
    t.after(() => relay.stop())
    await relay.start()
    const consumed = await readTopic({ brokers, topic: name, expectedCount: 20 })
    assert.equal(consumed.length, 20)
    assert.deepEqual(
      consumed.map((m) => JSON.parse(String(m.value)).id).sort((a, b) => a - b),
      Array.from({ length: 20 }, (_, id) => id),
    )
    const topicsEvent = seen.find((event) => event.type === 'topics')
    assert.deepEqual(topicsEvent, { type: 'topics', created: [name], ok: [], mismatched: [] })
    assert.ok(
      seen.indexOf(topicsEvent) < seen.findIndex((event) => event.type === 'delivered'),
      'topics ensured before the first delivery',
    )
    assert.equal((await topicState(name, [])).partitions, 4)
    await waitFor(async () => (await countRows(schema)) === 0, { what: 'outbox emptied' })
  })

  it('relay ensureTopics: true warns about an existing topic that differs, and delivers anyway', async (t) => {
    const name = uniqueName('ke_relay_mismatch')
    const schema = await newSchema()
    await createTopic(name, 1)
    const outbox = createPgOutbox({ topics: { events: defineTopic({ name, partitions: 3 }) }, schema, kafka })
    await outbox.migrate(DATABASE_URL)
    await outbox.transaction(pool, (_client, topics) => topics.events.produce('despite the difference'))
    const warnings: { context: unknown; message: string | undefined }[] = []
    const logger = {
      info() {},
      error() {},
      warn(context: object | string, message?: string) {
        warnings.push({ context, message })
      },
    }
    const seen: RelayEvent[] = []
    const relay = outbox.relay({
      connection: DATABASE_URL,
      ensureTopics: true,
      pollingInterval: 50,
      logger,
      onEvent: (event) => seen.push(event),
    })
    t.after(() => relay.stop())
    await relay.start()
    const consumed = await readTopic({ brokers, topic: name, expectedCount: 1 })
    assert.equal(String(consumed[0]?.value), 'despite the difference')
    assert.deepEqual(
      seen.find((event) => event.type === 'topics'),
      {
        type: 'topics',
        created: [],
        ok: [],
        mismatched: [{ topic: name, field: 'partitions', declared: 3, actual: 1 }],
      },
    )
    const warning = warnings.find((w) => (w.context as { code?: string }).code === 'KE_TOPIC_MISMATCH')
    assert.ok(warning, 'a KE_TOPIC_MISMATCH warning was logged')
    assert.match(
      String(warning.message),
      new RegExp(`Kafka topic '${name}' differs from its declaration: partitions is 1, declared 3`),
    )
    assert.equal((await topicState(name, [])).partitions, 1, 'the topic is unchanged')
  })

  it('a send to a missing topic (auto-creation off) names the topic and the fix, and the message stays', async (t) => {
    const name = uniqueName('ke_nowhere')
    // The transport's own error: retryable (the topic may be created later), and saying what to do.
    const transport = new KafkaTransport(kafka)
    t.after(() => transport.close())
    const record = { topic: name, key: null, value: Buffer.from('x'), headers: [], orderingHash: null }
    // The send rejects, or (a transport that reports per record) resolves naming the record.
    const error = await transport.send([record]).then(
      (result) => (result as { failed?: { error: unknown }[] } | undefined)?.failed?.[0]?.error,
      (cause: unknown) => cause,
    )
    assert.ok(error instanceof KEntityError)
    assert.equal(error.retryable, true, 'a topic may be created later')
    assert.match(error.message, new RegExp(`Kafka topic '${name}' does not exist`))
    assert.match(error.message, /outbox\.ensureTopics\(\)/)
    assert.match(error.message, /create it with your Kafka tooling/)
    assert.match(error.message, /kafka\.autoCreateTopics: true/)

    // Through a relay: the failure is reported with that text and the message stays in the outbox.
    const schema = await newSchema()
    const outbox = createPgOutbox({ topics: { events: defineTopic({ name }) }, schema, kafka })
    await outbox.migrate(DATABASE_URL)
    await outbox.transaction(pool, (_client, topics) => topics.events.produce({ hello: 'world' }))
    const failures: string[] = []
    const relay = outbox.relay({
      connection: DATABASE_URL,
      pollingInterval: 50,
      retryBackoff: { initial: 100, max: 200 },
      onEvent: (event) => {
        if (event.type === 'error') failures.push(String((event.error as Error).message))
        if (event.type === 'message-failed') failures.push(event.error)
      },
    })
    t.after(() => relay.stop())
    await relay.start()
    await waitFor(() => failures.length >= 1, { what: 'a failed send' })
    await relay.stop()
    assert.match(
      failures[0] ?? '',
      new RegExp(`Kafka topic '${name}' does not exist.*outbox\\.ensureTopics\\(\\)`),
    )
    assert.equal(await countRows(schema), 1, 'the message is still in the outbox')
    assert.equal(await outbox.deadLetters(DATABASE_URL).count(), 0)
    assert.equal(await topicExists(name), false, 'no topic was created by the sends')
  })

  it('a relay process survives rows with invalid topics: dead letters with KE_INVALID_TOPIC, others delivered', async () => {
    const name = uniqueName('ke_survivor')
    const schema = await newSchema()
    await createTopic(name, 1)
    const outbox = createPgOutbox({ topics: { events: defineTopic<number>({ name }) }, schema, kafka })
    await outbox.migrate(DATABASE_URL)
    // Rows no defineTopic() would accept, as an older version or a hand-written INSERT leaves them.
    await withClient((client) =>
      client.query(
        `INSERT INTO "${schema}".outbox (topic, value) VALUES ('__consumer_offsets', 'x'::bytea), ('bad topic!', 'y'::bytea)`,
      ),
    )
    await outbox.transaction(pool, (_client, topics) =>
      topics.events.produceMany(Array.from({ length: 10 }, (_, i) => i)),
    )
    const child = fork(fileURLToPath(new URL('./fixtures/signal-relay.ts', import.meta.url)), {
      env: { ...process.env, SCHEMA: schema, TOPIC: name, DATABASE_URL, KAFKA_BROKERS: brokers.join(',') },
    })
    let exited = false
    child.once('exit', () => {
      exited = true
    })
    let delivered = 0
    const failed: { topic: string; deadLettered: boolean; error: string }[] = []
    child.on(
      'message',
      (event: { type: string; count?: number; topic?: string; deadLettered?: boolean; error?: string }) => {
        if (event.type === 'delivered') delivered += event.count ?? 0
        if (event.type === 'message-failed') {
          failed.push({
            topic: String(event.topic),
            deadLettered: event.deadLettered === true,
            error: String(event.error),
          })
        }
      },
    )
    try {
      await waitFor(() => delivered >= 10 && failed.length >= 2, {
        what: () =>
          `delivery and two dead letters (delivered ${delivered}, failed ${JSON.stringify(failed)}, exited ${exited})`,
      })
      assert.equal(delivered, 10)
      assert.deepEqual(failed.map((f) => [f.topic, f.deadLettered]).sort(), [
        ['__consumer_offsets', true],
        ['bad topic!', true],
      ])
      for (const failure of failed) assert.match(failure.error, /was not sent/)
      // Still running and still delivering after the bad rows.
      await outbox.transaction(pool, (_client, topics) =>
        topics.events.produceMany(Array.from({ length: 5 }, (_, i) => 10 + i)),
      )
      await waitFor(() => delivered >= 15, {
        what: () => `delivery after the dead letters (delivered ${delivered})`,
      })
      assert.equal(delivered, 15)
      assert.equal(exited, false, 'the relay process is alive')
      const dead = await outbox.deadLetters(DATABASE_URL).list()
      assert.deepEqual(dead.map((d) => d.topic).sort(), ['__consumer_offsets', 'bad topic!'])
      for (const letter of dead)
        assert.match(letter.errors.at(-1)?.error ?? '', /KE_INVALID_TOPIC|invalid|reserved/)
      assert.equal(await countRows(schema), 0)
      const consumed = await readTopic({ brokers, topic: name, expectedCount: 15 })
      assert.equal(consumed.length, 15)
    } finally {
      if (!exited) {
        child.kill('SIGTERM')
        await once(child, 'exit')
      }
    }
  })
})
