/**
 * Never silent: a relay that cannot do its job says so, once per change of state and not once
 * per retry, with what is wrong and what to do; and the calls an application makes before
 * migrate() fail with KE_NOT_MIGRATED instead of a driver's error code.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { PGlite } from '@electric-sql/pglite'
import Database from 'better-sqlite3'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { createBetterSqliteOutbox } from '../src/adapters/better-sqlite3/index.ts'
import { createDrizzleOutbox } from '../src/adapters/drizzle/index.ts'
import { createDrizzleMysqlOutbox } from '../src/adapters/drizzle/mysql.ts'
import { createKnexOutbox } from '../src/adapters/knex/index.ts'
import { createKnexMysqlOutbox } from '../src/adapters/knex/mysql.ts'
import { createKyselyOutbox } from '../src/adapters/kysely/index.ts'
import { createKyselyMysqlOutbox } from '../src/adapters/kysely/mysql.ts'
import { createMikroOrmOutbox } from '../src/adapters/mikro-orm/index.ts'
import { createMikroOrmMysqlOutbox } from '../src/adapters/mikro-orm/mysql.ts'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { createNodeSqliteOutbox } from '../src/adapters/node-sqlite/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { createPgliteOutbox, openPgliteOutbox } from '../src/adapters/pglite/index.ts'
import { createPostgresJsOutbox } from '../src/adapters/postgres-js/index.ts'
import { createPrismaOutbox } from '../src/adapters/prisma/index.ts'
import { createPrismaMysqlOutbox } from '../src/adapters/prisma/mysql.ts'
import { createTypeOrmOutbox } from '../src/adapters/typeorm/index.ts'
import { createTypeOrmMysqlOutbox } from '../src/adapters/typeorm/mysql.ts'
import { defaultLogger, type Logger } from '../src/core/logger.ts'
import { RelayLog } from '../src/core/relay-log.ts'
import { defineTopic, ErrorCodes } from '../src/index.ts'
import { readTopic } from '../src/testing/read-topic.ts'
import { MYSQL_URL } from './contract/mysql-support.ts'
import { createTopic, DATABASE_URL, dropSchema, kafkaBrokers, uniqueName, waitFor } from './support/env.ts'

const FIXTURE = fileURLToPath(new URL('./fixtures/never-silent-relay.ts', import.meta.url))

/** A local port nothing listens on (yet). */
async function closedPort(): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}

/** Forwards every connection on `port` to `target` ('host:port'). */
async function startProxy(port: number, target: string): Promise<Server & { sockets: Set<Socket> }> {
  const [host, targetPort] = target.split(':')
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    const upstream = tcpConnect(Number(targetPort), host)
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => sockets.delete(socket))
    }
    client.pipe(upstream).pipe(client)
  })
  server.listen(port, '127.0.0.1')
  await once(server, 'listening')
  return Object.assign(server, { sockets })
}

async function stopProxy(proxy: Server & { sockets: Set<Socket> }): Promise<void> {
  for (const socket of proxy.sockets) socket.destroy()
  await new Promise((resolve) => proxy.close(resolve))
}

/** Runs the fixture relay; `lines()` is what it wrote to stderr so far, one entry per line. */
async function runRelay(
  env: Record<string, string>,
): Promise<{ child: ChildProcess; lines: () => string[] }> {
  const child = spawn(process.execPath, [FIXTURE], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stderr = ''
  let stdout = ''
  child.stderr?.on('data', (chunk) => {
    stderr += chunk
  })
  child.stdout?.on('data', (chunk) => {
    stdout += chunk
  })
  await waitFor(() => stdout.includes('running') || child.exitCode !== null, {
    timeout: 30_000,
    what: 'the relay process to start',
  })
  assert.equal(child.exitCode, null, `the relay process exited early:\n${stderr}`)
  return { child, lines: () => stderr.split('\n').filter((line) => line.startsWith('k-entity ')) }
}

async function stopRelay(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  await exited
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('the relay says what is wrong, once', () => {
  const schemas: string[] = []
  after(async () => {
    for (const schema of schemas) await dropSchema(schema)
  })

  it('a dead broker: one warning naming the address and ECONNREFUSED, then one line when it is back', async (t) => {
    const schema = uniqueName('ke_silent')
    schemas.push(schema)
    const topic = uniqueName('ke-silent')
    await createTopic(topic, 1)
    const outbox = createPgOutbox({ topics: { events: defineTopic<string>({ name: topic }) }, schema })
    await outbox.migrate(DATABASE_URL)
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 })
    t.after(() => pool.end())
    await outbox.transaction(pool, async (_client, topics) => {
      await topics.events.produce('waiting for Kafka', { key: 'k' })
    })

    const port = await closedPort()
    const { child, lines } = await runRelay({
      SCHEMA: schema,
      TOPIC: topic,
      RELAY_BROKERS: `127.0.0.1:${port}`,
    })
    t.after(() => stopRelay(child))
    const started = Date.now()
    await waitFor(() => lines().length > 0, { timeout: 15_000, what: 'a log line' })
    const firstAfterMs = Date.now() - started
    const [warning] = lines()
    assert.match(
      warning ?? '',
      new RegExp(
        `^k-entity warn: cannot reach Kafka at 127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\);.*messages stay in the outbox`,
      ),
    )
    // Many retries later (100-400 ms apart, each send tries for ~0.8 s), still that one line.
    await sleep(4000)
    assert.deepEqual(lines(), [warning], 'one line for the whole outage, not one per retry')

    const proxy = await startProxy(port, kafkaBrokers()[0] as string)
    t.after(() => stopProxy(proxy))
    await waitFor(() => lines().length > 1, { timeout: 30_000, what: 'the recovery line' })
    const recovery = lines()[1] ?? ''
    const attempts = Number(/\((\d+) failed attempts?\)/.exec(recovery)?.[1])
    assert.match(recovery, /^k-entity info: Kafka reachable again after [\d.]+ s \(\d+ failed attempts?\)/)
    assert.ok(attempts >= 2, `the relay retried (${attempts} failed attempts) while it said nothing`)
    const delivered = await readTopic({
      brokers: kafkaBrokers(),
      topic,
      expectedCount: 1,
      idleTimeoutMs: 10_000,
    })
    assert.equal(delivered.length, 1)
    assert.match(delivered[0]?.value?.toString() ?? '', /waiting for Kafka/)
    await stopRelay(child)
    assert.equal(lines().length, 2, `nothing else was logged:\n${lines().join('\n')}`)
    t.diagnostic(`first warning after ${firstAfterMs} ms; ${attempts} failed attempts before recovery`)
    for (const line of lines()) t.diagnostic(line)
  })

  it('a schema never migrated: one error line naming the table and migrate', async (t) => {
    const schema = uniqueName('ke_unmigrated')
    schemas.push(schema)
    const { child, lines } = await runRelay({
      SCHEMA: schema,
      TOPIC: uniqueName('ke-silent'),
      RELAY_BROKERS: kafkaBrokers().join(','),
    })
    t.after(() => stopRelay(child))
    await waitFor(() => lines().length > 0, { timeout: 15_000, what: 'a log line' })
    await sleep(3000)
    const all = lines()
    assert.equal(all.length, 1, `one line, not one per retry:\n${all.join('\n')}`)
    assert.match(all[0] ?? '', /^k-entity error: .*"?outbox"? does not exist.*outbox\.migrate\(/)
    assert.match(all[0] ?? '', new RegExp(schema))
    assert.match(all[0] ?? '', /retries until it exists/)
    t.diagnostic(all[0] ?? '')
  })

  it('a pino-like logger gets each line with a context object first; logger: false silences', async (t) => {
    const schema = uniqueName('ke_pino')
    schemas.push(schema)
    const topic = uniqueName('ke-pino')
    const calls: { level: string; context: unknown; message: unknown }[] = []
    const record =
      (level: string) =>
      (context: unknown, message?: unknown): void => {
        calls.push({ level, context, message })
      }
    const logger: Logger = {
      error: record('error'),
      warn: record('warn'),
      info: record('info'),
      debug: record('debug'),
    }
    const outbox = createPgOutbox({
      topics: { events: defineTopic<string>({ name: topic }) },
      schema,
      logger,
    })
    await outbox.migrate(DATABASE_URL)
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 })
    t.after(() => pool.end())
    await outbox.transaction(pool, async (_client, topics) => {
      await topics.events.produce('x', { key: 'k' })
    })
    const port = await closedPort()
    const relay = outbox.relay({
      connection: DATABASE_URL,
      kafka: { brokers: [`127.0.0.1:${port}`] },
      pollingInterval: 100,
      retryBackoff: { initial: 50, max: 200 },
    })
    t.after(() => relay.stop())
    await relay.start()
    await waitFor(() => calls.some((c) => c.level === 'warn'), { timeout: 15_000, what: 'a warning' })
    await sleep(2000)
    await relay.stop()
    const warnings = calls.filter((c) => c.level === 'warn')
    assert.equal(warnings.length, 1)
    for (const call of calls) {
      assert.equal(typeof call.context, 'object', `${call.level}: the context object comes first`)
      assert.equal(typeof call.message, 'string')
    }
    assert.match(String(warnings[0]?.message), new RegExp(`127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\)`))
    const context = warnings[0]?.context as { stage?: string; err?: unknown }
    assert.equal(context.stage, 'send')
    assert.ok(context.err instanceof Error, 'the error goes along as err')
    assert.deepEqual(
      calls.filter((c) => c.level === 'info').map((c) => c.message),
      ['relay started (mode single)', 'relay stopped'],
    )

    // The relay's own option wins over the outbox's: false logs nothing at all.
    calls.length = 0
    const quiet = outbox.relay({
      connection: DATABASE_URL,
      kafka: { brokers: [`127.0.0.1:${port}`] },
      logger: false,
    })
    await quiet.start()
    await sleep(1500)
    await quiet.stop()
    assert.deepEqual(calls, [])
  })

  it('the database: unreachable or refusing the credentials, one error naming host:port and never the password', async (t) => {
    const lines: { level: string; message: string }[] = []
    const capture: Logger = {
      error: (_context, message) => lines.push({ level: 'error', message: String(message) }),
      warn: (_context, message) => lines.push({ level: 'warn', message: String(message) }),
      info: (_context, message) => lines.push({ level: 'info', message: String(message) }),
    }
    const topics = { events: defineTopic<string>({ name: uniqueName('ke-db') }) }
    const fast = { pollingInterval: 100, retryBackoff: { initial: 50, max: 200 } }
    const port = await closedPort()
    const pgRelay = createPgOutbox({ topics, logger: capture }).relay({
      ...fast,
      connection: `postgres://someone:s3cret-pw@127.0.0.1:${port}/test`,
      kafka: { brokers: kafkaBrokers() },
    })
    t.after(() => pgRelay.stop())
    await pgRelay.start()
    await waitFor(() => lines.some((l) => l.level === 'error'), { timeout: 15_000, what: 'an error line' })
    await sleep(1500)
    await pgRelay.stop()
    const pgErrors = lines.filter((l) => l.level === 'error')
    assert.equal(pgErrors.length, 1, pgErrors.map((l) => l.message).join('\n'))
    assert.match(
      pgErrors[0]?.message ?? '',
      new RegExp(`cannot reach the database at 127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\)`),
    )

    lines.length = 0
    const url = new URL(MYSQL_URL)
    url.username = 'ke_nobody'
    url.password = 'wr0ng-pw'
    const mysqlRelay = createMysqlOutbox({ topics, logger: capture }).relay({
      ...fast,
      connection: url.toString(),
      kafka: { brokers: kafkaBrokers() },
    })
    t.after(() => mysqlRelay.stop())
    await mysqlRelay.start()
    await waitFor(() => lines.some((l) => l.level === 'error'), { timeout: 15_000, what: 'an error line' })
    await sleep(1500)
    await mysqlRelay.stop()
    const mysqlErrors = lines.filter((l) => l.level === 'error')
    assert.equal(mysqlErrors.length, 1, mysqlErrors.map((l) => l.message).join('\n'))
    assert.match(
      mysqlErrors[0]?.message ?? '',
      new RegExp(`the database at ${url.hostname}:${url.port || 3306} refused the relay's credentials`),
    )
    for (const line of [...pgErrors, ...mysqlErrors]) {
      assert.doesNotMatch(line.message, /s3cret-pw|wr0ng-pw/)
      t.diagnostic(`${line.level}: ${line.message}`)
    }
  })

  it('a failure that goes on is mentioned again every 5 minutes, with the count', () => {
    let now = 0
    const lines: string[] = []
    const capture: Logger = {
      error: (_c, message) => lines.push(`error: ${message}`),
      warn: (_c, message) => lines.push(`warn: ${message}`),
      info: (_c, message) => lines.push(`info: ${message}`),
    }
    const log = new RelayLog(capture, { kafka: '10.0.0.1:9092' }, 30_000, () => now)
    const refused = Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:9092'), { code: 'ECONNREFUSED' })
    for (let second = 0; second <= 600; second += 30) {
      now = second * 1000
      log.failed('send', new Error('Kafka did not acknowledge', { cause: refused }), 30_000)
    }
    now = 610_000
    log.kafkaOk()
    log.kafkaOk()
    assert.deepEqual(lines, [
      'warn: cannot reach Kafka at 10.0.0.1:9092 (ECONNREFUSED); retrying in 30 s, then with backoff up to every 30 s, messages stay in the outbox',
      'warn: still cannot reach Kafka at 10.0.0.1:9092 (ECONNREFUSED) after 5 min (11 attempts)',
      'warn: still cannot reach Kafka at 10.0.0.1:9092 (ECONNREFUSED) after 10 min (21 attempts)',
      'info: Kafka reachable again after 10 min (21 failed attempts)',
    ])
  })

  it('the default logger: warnings and errors as one line each, info only to say a problem is over', () => {
    const written: string[] = []
    const logger = defaultLogger({ write: (line: string) => written.push(line) })
    logger.warn({ stage: 'send', attempts: 2, err: new Error('hidden') }, 'cannot reach Kafka\nat x')
    logger.error('plain message, console style')
    logger.info({ mode: 'single' }, 'relay started')
    logger.info({ recovered: true }, 'Kafka reachable again')
    logger.debug?.({}, 'noise')
    assert.deepEqual(written, [
      'k-entity warn: cannot reach Kafka at x {"stage":"send","attempts":2}\n',
      'k-entity error: plain message, console style\n',
      'k-entity info: Kafka reachable again {"recovered":true}\n',
    ])
  })

  it('rejects a logger that is not one', () => {
    const topics = { events: defineTopic({ name: 'ke-never-silent' }) }
    for (const logger of [true, 'info', {}, { info() {}, warn() {} }]) {
      assert.throws(() => createPgOutbox({ topics, logger: logger as never }), {
        code: ErrorCodes.INVALID_ARGUMENT,
        message: /'logger'/,
      })
    }
    const outbox = createPgOutbox({ topics, kafka: { brokers: ['127.0.0.1:9092'] } })
    assert.throws(() => outbox.relay({ logger: 42 as never }), { code: ErrorCodes.INVALID_ARGUMENT })
    assert.doesNotThrow(() => createPgOutbox({ topics, logger: console }))
  })
})

describe('before migrate(): KE_NOT_MIGRATED, saying what to run', () => {
  const topics = { events: defineTopic<string>({ name: 'ke-not-migrated' }) }
  const notMigrated = (table: RegExp) => (error: unknown) => {
    assert.equal((error as { code?: string }).code, ErrorCodes.NOT_MIGRATED, String(error))
    assert.match((error as Error).message, table)
    assert.match((error as Error).message, /outbox\.migrate\(/)
    return true
  }

  it('PostgreSQL (node-postgres): produce (held writes, at COMMIT, and at produce), stats, deadLetters', async (t) => {
    const schema = uniqueName('ke_nomig')
    const outbox = createPgOutbox({ topics, schema })
    const eager = createPgOutbox({ topics, schema, writeWithCommit: false })
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 })
    t.after(() => pool.end())
    const table = new RegExp(`${schema}.*outbox`)
    await assert.rejects(
      outbox.transaction(pool, async (_client, producers) => {
        await producers.events.produce('x')
      }),
      notMigrated(/outbox/),
    )
    await assert.rejects(
      eager.transaction(pool, async (_client, producers) => {
        await producers.events.produce('x')
      }),
      notMigrated(table),
    )
    await assert.rejects(outbox.stats(DATABASE_URL), notMigrated(table))
    await assert.rejects(outbox.deadLetters(DATABASE_URL).list(), notMigrated(table))
    await assert.rejects(outbox.deadLetters(DATABASE_URL).count(), notMigrated(table))
  })

  it('MariaDB (mysql2): produce, stats, deadLetters', async (t) => {
    const database = uniqueName('ke_nomig')
    const outbox = createMysqlOutbox({ topics, schema: database })
    const pool = mysql.createPool({ uri: MYSQL_URL, connectionLimit: 1 })
    t.after(() => pool.end())
    const table = new RegExp(`${database}.*outbox`)
    await assert.rejects(
      outbox.transaction(pool, async (_connection, producers) => {
        await producers.events.produce('x')
      }),
      notMigrated(table),
    )
    await assert.rejects(outbox.stats(MYSQL_URL), notMigrated(table))
    await assert.rejects(outbox.deadLetters(MYSQL_URL).list(), notMigrated(table))
  })

  it('SQLite (better-sqlite3): produce, stats, deadLetters', async () => {
    const db = new Database(':memory:')
    try {
      const outbox = createBetterSqliteOutbox({ topics })
      assert.throws(
        () => db.transaction(() => outbox.in(db).events.produce('x'))(),
        notMigrated(/outbox.*outbox\.migrate\(db\)/),
      )
      await assert.rejects(outbox.stats(db), notMigrated(/outbox/))
      await assert.rejects(outbox.deadLetters(db).list(), notMigrated(/outbox/))
    } finally {
      db.close()
    }
  })

  it('PGlite: produce, stats, deadLetters', async (t) => {
    const db = await PGlite.create()
    t.after(() => db.close())
    const outbox = createPgliteOutbox({ topics, db })
    await assert.rejects(
      outbox.transaction(async (_tx, producers) => {
        await producers.events.produce('x')
      }),
      notMigrated(/k_entity.*outbox/),
    )
    await assert.rejects(outbox.stats(), notMigrated(/k_entity.*outbox/))
    await assert.rejects(outbox.deadLetters().list(), notMigrated(/k_entity.*outbox/))
  })
})

describe('every outbox factory refuses a missing options argument clearly', () => {
  const factories: [string, (options: never) => unknown][] = [
    ['createPgOutbox', createPgOutbox],
    ['createPostgresJsOutbox', createPostgresJsOutbox],
    ['createKyselyOutbox', createKyselyOutbox],
    ['createKnexOutbox', createKnexOutbox],
    ['createDrizzleOutbox', createDrizzleOutbox],
    ['createTypeOrmOutbox', createTypeOrmOutbox],
    ['createMikroOrmOutbox', createMikroOrmOutbox],
    ['createPrismaOutbox', createPrismaOutbox],
    ['createPgliteOutbox', createPgliteOutbox],
    ['createMysqlOutbox', createMysqlOutbox],
    ['createKnexMysqlOutbox', createKnexMysqlOutbox],
    ['createKyselyMysqlOutbox', createKyselyMysqlOutbox],
    ['createDrizzleMysqlOutbox', createDrizzleMysqlOutbox],
    ['createTypeOrmMysqlOutbox', createTypeOrmMysqlOutbox],
    ['createMikroOrmMysqlOutbox', createMikroOrmMysqlOutbox],
    ['createPrismaMysqlOutbox', createPrismaMysqlOutbox],
    ['createBetterSqliteOutbox', createBetterSqliteOutbox],
    ['createNodeSqliteOutbox', createNodeSqliteOutbox],
  ]
  for (const [name, create] of factories) {
    it(name, () => {
      for (const options of [undefined, null, 'postgres://x', 42, []]) {
        assert.throws(
          () => create(options as never),
          (error: Error & { code?: string }) => {
            assert.equal(error.code, ErrorCodes.INVALID_ARGUMENT, `${name}(${String(options)}): ${error}`)
            assert.match(error.message, /options object/)
            return true
          },
        )
      }
    })
  }
  it('openPgliteOutbox', async () => {
    await assert.rejects(openPgliteOutbox(undefined as never), { code: ErrorCodes.INVALID_ARGUMENT })
  })
})

before(() => {
  // The suites above read the shared broker; fail early and clearly when the runner did not start one.
  kafkaBrokers()
})
