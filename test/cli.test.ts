import assert from 'node:assert/strict'
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { createAdmin } from '../src/admin/index.ts'
import { defineTopic } from '../src/index.ts'
import { readTopic } from '../src/testing/index.ts'
import { dropDatabase, MYSQL_URL, withMysql } from './contract/mysql-support.ts'
import {
  createTopic,
  DATABASE_URL,
  dropSchema,
  kafkaBrokers,
  uniqueName,
  waitFor,
  withClient,
} from './support/env.ts'

/** The `k-entity` command, run as users run it: a child process, its exit code and its output. */

const BIN = fileURLToPath(new URL('../src/cli/bin.ts', import.meta.url))
const cleanups: (() => Promise<void>)[] = []
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
})

interface Run {
  code: number
  stdout: string
  stderr: string
}

/** Runs the CLI without a terminal (stdin is not a TTY), DATABASE_URL unset unless given. */
function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [BIN, ...args],
      {
        env: { ...process.env, DATABASE_URL: undefined, KAFKA_BROKERS: undefined, ...env },
        timeout: 120_000,
      },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1
        resolve({ code, stdout, stderr })
      },
    )
    child.stdin?.end()
  })
}

// biome-ignore lint/suspicious/noExplicitAny: parsed CLI output, checked field by field
function json(run: Run): any {
  assert.equal(run.code, 0, `exit ${run.code}: ${run.stderr}`)
  return JSON.parse(run.stdout)
}

describe('k-entity CLI', () => {
  it('--help on every command, exit codes for usage errors', async () => {
    for (const command of ['migrate', 'status', 'dlq', 'relay', 'kafka', 'demo', 'dashboard']) {
      const run = await cli([command, '--help'])
      assert.equal(run.code, 0, `${command} --help: ${run.stderr}`)
      assert.match(run.stdout, new RegExp(`^Usage: k-entity ${command}`), command)
    }
    assert.equal((await cli(['--help'])).code, 0)
    const none = await cli([])
    assert.equal(none.code, 2)
    assert.match(none.stdout, /^Usage: k-entity <command>/)
    const unknown = await cli(['frobnicate'])
    assert.equal(unknown.code, 2)
    assert.match(unknown.stderr, /unknown command 'frobnicate'/)
    const noUrl = await cli(['status'])
    assert.equal(noUrl.code, 2)
    assert.match(noUrl.stderr, /pass --url postgres:\/\/.*or set DATABASE_URL/)
    const badOption = await cli(['status', '--frob', '--url', DATABASE_URL])
    assert.equal(badOption.code, 2)
    assert.match(badOption.stderr, /Unknown option '--frob'; see k-entity status --help/)
    const badScheme = await cli(['status', '--url', 'http://example.com/db'])
    assert.equal(badScheme.code, 2)
    const badMode = await cli([
      'relay',
      '--url',
      DATABASE_URL,
      '--brokers',
      '127.0.0.1:9092',
      '--mode',
      'fast',
    ])
    assert.equal(badMode.code, 2)
    assert.match(badMode.stderr, /--mode must be single, exclusive or concurrent/)
    const badCap = await cli(['status', '--url', DATABASE_URL, '--cap', '0'])
    assert.equal(badCap.code, 2)
  })

  it('errors say how to fix them and never show the password', async () => {
    const secret = 'hunter2-s3cret'
    const unreachable = await cli(['status', '--url', `postgres://app:${secret}@127.0.0.1:1/app`])
    assert.equal(unreachable.code, 1)
    assert.match(
      unreachable.stderr,
      /cannot reach PostgreSQL at 127\.0\.0\.1:1 \(ECONNREFUSED\): start the server, or fix the host and port in --url or DATABASE_URL/,
    )
    const mysqlDown = await cli(['status', '--url', `mysql://app:${secret}@127.0.0.1:1/app`])
    assert.equal(mysqlDown.code, 1)
    assert.match(mysqlDown.stderr, /cannot reach MySQL\/MariaDB at 127\.0\.0\.1:1/)
    const stranger = new URL(DATABASE_URL)
    stranger.username = 'ke_cli_nobody'
    stranger.password = secret
    const login = await cli(['status'], { DATABASE_URL: stranger.href })
    assert.equal(login.code, 1)
    assert.match(login.stderr, /refused the login .*check the user and password/)
    const schema = uniqueName('ke_cli_none')
    const missing = await cli(['status', '--schema', schema], { DATABASE_URL })
    assert.equal(missing.code, 1)
    assert.match(missing.stderr, new RegExp(`run k-entity migrate --schema ${schema}`))
    const kafkaDown = await cli(['relay', '--url', DATABASE_URL, '--brokers', '127.0.0.1:1'])
    assert.equal(kafkaDown.code, 1)
    assert.match(kafkaDown.stderr, /cannot reach Kafka at 127\.0\.0\.1:1 .*fix --brokers \/ KAFKA_BROKERS/)
    for (const run of [unreachable, mysqlDown, login, missing, kafkaDown]) {
      assert.ok(!run.stderr.includes(secret) && !run.stdout.includes(secret), run.stderr)
    }
  })

  it('PostgreSQL: migrate, status --json, dlq list/show/replay/purge, relay delivers to Kafka and stops on SIGTERM', async () => {
    const schema = uniqueName('ke_cli')
    const topic = uniqueName('cli-orders').replaceAll('_', '-')
    cleanups.push(() => dropSchema(schema))
    await createTopic(topic, 2)
    const env = { DATABASE_URL }
    const printed = await cli(['migrate', '--print', '--schema', schema], env)
    assert.equal(printed.code, 0)
    assert.match(printed.stdout, new RegExp(`CREATE TABLE "${schema}"\\."outbox"`))
    assert.deepEqual(json(await cli(['migrate', '--json', '--schema', schema], env)).applied, [1, 2, 3])
    assert.deepEqual(json(await cli(['migrate', '--json', '--schema', schema], env)).applied, [])

    const orders = defineTopic<string>({ name: topic })
    const outbox = createPgOutbox({ topics: { orders }, schema, kafka: { brokers: kafkaBrokers() } })
    cleanups.push(() => outbox.close())
    await withClient(async (client) => {
      await client.query('BEGIN')
      for (let i = 0; i < 4; i++) await outbox.in(client).orders.produce(`order-${i}`, { key: `c${i % 2}` })
      await client.query('COMMIT')
      await client.query(
        `INSERT INTO "${schema}".outbox_dead_letters (message_id, topic, key, value, attempts, errors, created_at, dead_at)
         VALUES (100, $1, 'k', 'dead-1', 3, '[{"at":"2026-12-01T00:00:00Z","error":"boom"}]', now(), now() - interval '2 days'),
                (101, $1, 'k', 'dead-2', 3, '[]', now(), now()),
                (102, 'other-topic', NULL, '\\x00ff'::bytea, 1, '[]', now(), now())`,
        [topic],
      )
    })
    const status = json(await cli(['status', '--json', '--schema', schema], env))
    assert.equal(status.pending, 4)
    assert.equal(status.ready, 4)
    assert.equal(status.deadLetters, 3)
    assert.equal(status.exact, true)
    assert.deepEqual(
      status.topics.map((t: { topic: string; pending: number; deadLetters: number }) => [
        t.topic,
        t.pending,
        t.deadLetters,
      ]),
      [
        [topic, 4, 2],
        ['other-topic', 0, 1],
      ].sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
    )
    const text = await cli(['status', '--schema', schema], env)
    assert.equal(text.code, 0)
    assert.match(text.stdout, /pending 4 \(ready 4, retrying 0\), dead letters 3/)

    const listed = json(await cli(['dlq', 'list', '--json', '--schema', schema, '--topic', topic], env))
    assert.deepEqual(
      listed.map((l: { value: string }) => l.value),
      ['dead-1', 'dead-2'],
    )
    const all = json(await cli(['dlq', 'list', '--json', '--schema', schema], env))
    assert.equal(all.find((l: { topic: string }) => l.topic === 'other-topic').value, 'base64:AP8=')
    const shown = await cli(['dlq', 'show', listed[0].id, '--schema', schema], env)
    assert.equal(shown.code, 0)
    assert.match(shown.stdout, /value\s+dead-1/)
    assert.match(shown.stdout, /boom/)
    assert.equal((await cli(['dlq', 'show', '999999', '--schema', schema], env)).code, 1)

    // No terminal and no --yes: refused, nothing changed.
    const refused = await cli(['dlq', 'replay', '--topic', topic, '--schema', schema], env)
    assert.equal(refused.code, 2)
    assert.match(refused.stderr, /refusing to replay 2 dead letters .*pass --yes/)
    const old = await cli(
      [
        'dlq',
        'replay',
        '--dead-before',
        new Date(Date.now() - 86_400_000).toISOString(),
        '--yes',
        '--json',
        '--schema',
        schema,
      ],
      env,
    )
    assert.deepEqual(json(old), { action: 'replay', count: 1 })
    const replayed = json(
      await cli(['dlq', 'replay', '--topic', topic, '--yes', '--json', '--schema', schema], env),
    )
    assert.equal(replayed.count, 1)
    const purged = await cli(['dlq', 'purge', '--all', '--yes', '--schema', schema], env)
    assert.equal(purged.code, 0)
    assert.match(purged.stdout, /purged 1 dead letter$/m)
    const after = json(await cli(['status', '--json', '--schema', schema], env))
    assert.deepEqual([after.pending, after.deadLetters], [6, 0])

    // The relay from the URL alone delivers everything (the 4 produced and the 2 replayed).
    const relay: ChildProcess = spawn(
      process.execPath,
      [BIN, 'relay', '--schema', schema, '--mode', 'exclusive'],
      {
        env: { ...process.env, DATABASE_URL, KAFKA_BROKERS: kafkaBrokers().join(',') },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    let stderr = ''
    relay.stderr?.on('data', (chunk) => {
      stderr += chunk
    })
    const exited = new Promise<number | null>((resolve) => relay.once('exit', (code) => resolve(code)))
    cleanups.push(async () => {
      relay.kill('SIGKILL')
    })
    const admin = createAdmin({ url: DATABASE_URL, schema })
    cleanups.push(() => admin.close())
    await waitFor(async () => (await admin.status()).pending === 0, {
      timeout: 60_000,
      what: () => `the relay to drain; stderr: ${stderr}`,
    })
    const consumed = await readTopic({ brokers: kafkaBrokers(), topic, expectedCount: 6 })
    assert.deepEqual(consumed.map((m) => String(m.value)).sort(), [
      'dead-1',
      'dead-2',
      'order-0',
      'order-1',
      'order-2',
      'order-3',
    ])
    relay.kill('SIGTERM')
    assert.equal(await exited, 0, stderr)
    assert.match(stderr, /SIGTERM, stopping/)
    assert.match(stderr, /stopped/)
  })

  it('MariaDB and SQLite: migrate, status --json and dlq list from the URL scheme', async () => {
    const database = uniqueName('ke_cli')
    cleanups.push(() => dropDatabase(database))
    const mariadb = MYSQL_URL.replace(/^mysql:/, 'mariadb:')
    assert.deepEqual(
      json(await cli(['migrate', '--json', '--url', mariadb, '--schema', database])).applied.length > 0,
      true,
    )
    await withMysql((c) =>
      c.query(`INSERT INTO \`${database}\`.outbox (topic, value) VALUES ('m-topic', 'x'), ('m-topic', 'y')`),
    )
    await withMysql((c) =>
      c.query(
        `INSERT INTO \`${database}\`.outbox_dead_letters (message_id, topic, attempts, errors, created_at) VALUES (1, 'm-topic', 1, '[]', UTC_TIMESTAMP(6))`,
      ),
    )
    const status = json(await cli(['status', '--json', '--url', mariadb, '--schema', database]))
    assert.deepEqual([status.pending, status.deadLetters, status.topics[0].topic], [2, 1, 'm-topic'])
    assert.equal(json(await cli(['dlq', 'list', '--json', '--url', mariadb, '--schema', database])).length, 1)

    const dir = mkdtempSync(join(tmpdir(), 'ke-cli-'))
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }))
    const file = join(dir, 'app.db')
    assert.deepEqual(json(await cli(['migrate', '--json', '--url', file])).applied.length > 0, true)
    const empty = json(await cli(['status', '--json', '--url', `file:${file}`]))
    assert.deepEqual([empty.pending, empty.deadLetters, empty.relays], [0, 0, []])
    const text = await cli(['status', '--url', file])
    assert.match(text.stdout, /relays: not visible on SQLite/)
  })

  it('demo: writes, rolls back, relays and reads back on a temporary SQLite file and on PostgreSQL', async () => {
    const run = await cli(['demo', '--orders', '20', '--json'], { KAFKA_BROKERS: kafkaBrokers().join(',') })
    const result = json(run)
    assert.deepEqual(
      [
        result.database,
        result.committed,
        result.rolledBack,
        result.delivered,
        result.lost,
        result.phantom,
        result.ok,
      ],
      ['sqlite', 16, 4, 16, 0, 0, true],
    )
    const schema = uniqueName('ke_cli_demo')
    cleanups.push(() => dropSchema(schema))
    const onPostgres = json(
      await cli(['demo', '--orders', '10', '--json', '--schema', schema], {
        DATABASE_URL,
        KAFKA_BROKERS: kafkaBrokers().join(','),
      }),
    )
    assert.deepEqual(
      [onPostgres.database, onPostgres.committed, onPostgres.delivered, onPostgres.ok],
      ['postgres', 8, 8, true],
    )
    const noKafka = await cli(['demo', '--brokers', '127.0.0.1:1'])
    assert.equal(noKafka.code, 1)
    assert.match(noKafka.stderr, /cannot reach Kafka at 127\.0\.0\.1:1/)
  })

  it("relay --config: the app's own outbox module, stopped by SIGINT", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ke-cli-config-'))
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }))
    const file = join(dir, 'app.db')
    const topic = uniqueName('cli-config').replaceAll('_', '-')
    await createTopic(topic, 1)
    const adapter = fileURLToPath(new URL('../src/adapters/node-sqlite/index.ts', import.meta.url))
    const core = fileURLToPath(new URL('../src/index.ts', import.meta.url))
    const config = join(dir, 'outbox.config.ts')
    writeFileSync(
      config,
      `import { createNodeSqliteOutbox } from ${JSON.stringify(adapter)}
import { defineTopic } from ${JSON.stringify(core)}
export const outbox = createNodeSqliteOutbox({
  topics: { events: defineTopic<string>({ name: ${JSON.stringify(topic)} }) },
  kafka: { brokers: ${JSON.stringify(kafkaBrokers())} },
})
export const relayOptions = { connection: ${JSON.stringify(file)} }
`,
    )
    assert.equal((await cli(['migrate', '--url', file])).code, 0)
    const { DatabaseSync } = await import('node:sqlite')
    const { createNodeSqliteOutbox } = await import('../src/adapters/node-sqlite/index.ts')
    const writer = createNodeSqliteOutbox({ topics: { events: defineTopic<string>({ name: topic }) } })
    const db = new DatabaseSync(file)
    db.exec('BEGIN')
    for (let i = 0; i < 3; i++) writer.in(db).events.produce(`event-${i}`)
    db.exec('COMMIT')
    db.close()
    const relay = spawn(process.execPath, [BIN, 'relay', '--config', config], {
      env: { ...process.env, DATABASE_URL: undefined, KAFKA_BROKERS: undefined },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stderr = ''
    relay.stderr?.on('data', (chunk) => {
      stderr += chunk
    })
    const exited = new Promise<number | null>((resolve) => relay.once('exit', (code) => resolve(code)))
    cleanups.push(async () => {
      relay.kill('SIGKILL')
    })
    const consumed = await readTopic({
      brokers: kafkaBrokers(),
      topic,
      expectedCount: 3,
      timeoutMs: 90_000,
      idleTimeoutMs: 60_000,
    })
    assert.deepEqual(
      consumed.map((m) => String(m.value)),
      ['event-0', 'event-1', 'event-2'],
      stderr,
    )
    relay.kill('SIGINT')
    assert.equal(await exited, 0, stderr)
    assert.match(stderr, /SIGINT, stopping/)
  })
  it('dashboard serves the page and the status of the outbox, stops on SIGINT with exit 0', async () => {
    const schema = uniqueName('ke_cli_dash')
    cleanups.push(() => dropSchema(schema))
    json(await cli(['migrate', '--json', '--schema', schema, '--url', DATABASE_URL]))
    const child = spawn(process.execPath, [BIN, 'dashboard', '--port', '0', '--json', '--schema', schema], {
      env: { ...process.env, DATABASE_URL },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    child.stdout.on('data', (chunk) => {
      stdout += chunk
    })
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    try {
      await waitFor(() => /"url"/.test(stdout), { what: 'the dashboard URL', timeout: 30_000 })
      const { url } = JSON.parse(stdout) as { url: string }
      assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/)
      const page = await fetch(url)
      assert.equal(page.status, 200)
      const status = (await (await fetch(`${url}api/status`)).json()) as { pending: number; exact: boolean }
      assert.deepEqual([status.pending, status.exact], [0, true])
    } finally {
      child.kill('SIGINT')
    }
    assert.equal(await exited, 0)
    const missing = await cli([
      'dashboard',
      '--port',
      '0',
      '--schema',
      uniqueName('ke_cli_none'),
      '--url',
      DATABASE_URL,
    ])
    assert.equal(missing.code, 1)
    assert.match(missing.stderr, /run k-entity migrate/)
  })
})
