import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { createAdmin } from '../src/admin/index.ts'
import type { OutboxAdmin, OutboxStatus } from '../src/admin/types.ts'
import type { OutboxRelay } from '../src/core/relay.ts'
import { defineTopic, ErrorCodes, isKEntityError } from '../src/index.ts'
import { dropDatabase, MYSQL_URL, withMysql } from './contract/mysql-support.ts'
import { DATABASE_URL, dropSchema, kafkaBrokers, uniqueName, waitFor, withClient } from './support/env.ts'

/**
 * `status()` without a topics map, on the real databases: exact figures under the cap, the
 * estimate above it (`exact: false`), the oldest age by the database clock, and the relays the
 * database can see.
 */

const cleanups: (() => Promise<void>)[] = []
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
})

function topicOf(status: OutboxStatus, topic: string) {
  const found = status.topics.find((t) => t.topic === topic)
  assert.ok(found, `topic ${topic} in ${JSON.stringify(status.topics)}`)
  return found
}

/** 5 messages on a, 3 on b; 2 of b wait for a retry; a's oldest is 60 s old; 2 dead letters on a, 1 on c. */
function assertExactFigures(status: OutboxStatus): void {
  assert.equal(status.exact, true)
  assert.equal(status.pending, 8)
  assert.equal(status.retrying, 2)
  assert.equal(status.ready, 6)
  assert.equal(status.deadLetters, 3)
  assert.ok(
    status.oldestPendingMs >= 59_000 && status.oldestPendingMs < 600_000,
    String(status.oldestPendingMs),
  )
  assert.ok(status.at instanceof Date && Math.abs(status.at.getTime() - Date.now()) < 60_000)
  const a = topicOf(status, 'status-a')
  assert.deepEqual([a.pending, a.ready, a.retrying, a.deadLetters], [5, 5, 0, 2])
  assert.ok(a.oldestPendingMs >= 59_000)
  const b = topicOf(status, 'status-b')
  assert.deepEqual([b.pending, b.ready, b.retrying, b.deadLetters], [3, 1, 2, 0])
  assert.ok(b.oldestPendingMs < 59_000)
  const c = topicOf(status, 'status-c')
  assert.deepEqual([c.pending, c.deadLetters], [0, 1])
}

/** With a cap of 4 the sample of 5 overflows: the size comes from the estimate, bounded by the id range (8). */
function assertCappedFigures(status: OutboxStatus): void {
  assert.equal(status.exact, false)
  assert.ok(status.pending >= 5 && status.pending <= 8, `pending ${status.pending}`)
  assert.ok(status.oldestPendingMs >= 59_000)
}

const topics = () => ({
  a: defineTopic<string>({ name: 'status-a' }),
  b: defineTopic<string>({ name: 'status-b' }),
})

describe('admin status', () => {
  it('PostgreSQL: exact figures under the cap, the estimate above it, relays from the leader lock', async () => {
    const schema = uniqueName('ke_adm')
    cleanups.push(() => dropSchema(schema))
    const admin = createAdmin({ url: DATABASE_URL, schema })
    cleanups.push(() => admin.close())
    assert.equal(admin.database, 'PostgreSQL')
    await assert.rejects(admin.status(), (error: unknown) => isKEntityError(error, ErrorCodes.NOT_MIGRATED))
    assert.deepEqual((await admin.migrate()).current > 0, true)
    const empty = await admin.status()
    assert.deepEqual([empty.pending, empty.deadLetters, empty.oldestPendingMs, empty.exact], [0, 0, 0, true])

    const outbox = createPgOutbox({ topics: topics(), schema, kafka: { brokers: kafkaBrokers() } })
    await withClient(async (client) => {
      await client.query('BEGIN')
      const p = outbox.in(client)
      for (let i = 0; i < 5; i++) await p.a.produce(`a${i}`, { key: `k${i}` })
      for (let i = 0; i < 3; i++) await p.b.produce(`b${i}`, { key: `k${i}` })
      await client.query('COMMIT')
      await client.query(
        `UPDATE "${schema}".outbox SET created_at = now() - interval '60 seconds' WHERE topic = 'status-a'`,
      )
      await client.query(
        `UPDATE "${schema}".outbox SET attempts = 1, available_at = now() + interval '1 hour' WHERE id IN (SELECT id FROM "${schema}".outbox WHERE topic = 'status-b' ORDER BY id LIMIT 2)`,
      )
      await client.query(
        `INSERT INTO "${schema}".outbox_dead_letters (message_id, topic, attempts, errors, created_at) VALUES (1, 'status-a', 1, '[]', now()), (2, 'status-a', 1, '[]', now()), (3, 'status-c', 1, '[]', now())`,
      )
    })
    assertExactFigures(await admin.status())
    assertCappedFigures(await admin.status({ countCap: 4 }))
    // The app's own outbox gives the same admin part.
    assertExactFigures(await outbox.admin(DATABASE_URL).status())

    // A leader and a standby, as the database shows them.
    const relays: OutboxRelay[] = []
    cleanups.push(async () => {
      for (const relay of relays) await relay.stop()
    })
    for (let i = 0; i < 2; i++) {
      const relay = outbox.relay({
        connection: DATABASE_URL,
        mode: 'exclusive',
        leaderCheckInterval: 200,
        logger: false,
      } as never)
      relays.push(relay)
      relay.start()
    }
    let seen: OutboxStatus | undefined
    await waitFor(
      async () => {
        seen = await admin.status()
        return seen.relays.some((r) => r.role === 'leader') && seen.relays.some((r) => r.role === 'standby')
      },
      { timeout: 30_000, what: () => `a leader and a standby in ${JSON.stringify(seen?.relays)}` },
    )
    const leader = seen?.relays.find((r) => r.role === 'leader')
    assert.match(leader?.name ?? '', /^k-entity-relay \(pid \d+\)$/)
    assert.ok(leader?.since instanceof Date)
    assert.match(leader?.client ?? '', /^127\.0\.0\.1:\d+$/)
    await Promise.all(relays.map((relay) => relay.stop()))
    relays.length = 0
    await outbox.close()
  })

  it('MySQL/MariaDB: the same figures, relays from the user locks', async () => {
    const database = uniqueName('ke_adm')
    cleanups.push(() => dropDatabase(database))
    const admin = createAdmin({ url: MYSQL_URL.replace(/^mysql:/, 'mariadb:'), schema: database })
    assert.equal(admin.database, 'MySQL/MariaDB')
    await assert.rejects(admin.status(), (error: unknown) => isKEntityError(error, ErrorCodes.NOT_MIGRATED))
    await admin.migrate()
    const outbox = createMysqlOutbox({
      topics: topics(),
      schema: database,
      kafka: { brokers: kafkaBrokers() },
    })
    await withMysql(async (connection) => {
      await connection.beginTransaction()
      const p = outbox.in(connection)
      for (let i = 0; i < 5; i++) await p.a.produce(`a${i}`, { key: `k${i}` })
      for (let i = 0; i < 3; i++) await p.b.produce(`b${i}`, { key: `k${i}` })
      await connection.commit()
      const table = `\`${database}\`.outbox`
      await connection.query(
        `UPDATE ${table} SET created_at = UTC_TIMESTAMP(6) - INTERVAL 60 SECOND WHERE topic = 'status-a'`,
      )
      await connection.query(
        `UPDATE ${table} SET attempts = 1, available_at = UTC_TIMESTAMP(6) + INTERVAL 1 HOUR WHERE topic = 'status-b' ORDER BY id LIMIT 2`,
      )
      await connection.query(
        `INSERT INTO \`${database}\`.outbox_dead_letters (message_id, topic, attempts, errors, created_at) VALUES (1, 'status-a', 1, '[]', UTC_TIMESTAMP(6)), (2, 'status-a', 1, '[]', UTC_TIMESTAMP(6)), (3, 'status-c', 1, '[]', UTC_TIMESTAMP(6))`,
      )
    })
    assertExactFigures(await admin.status())
    assertCappedFigures(await admin.status({ countCap: 4 }))

    const relay = outbox.relay({ connection: MYSQL_URL, mode: 'exclusive', logger: false } as never)
    cleanups.push(() => relay.stop())
    relay.start()
    let seen: OutboxStatus | undefined
    await waitFor(
      async () => {
        seen = await admin.status()
        return seen.relays.some((r) => r.role === 'leader')
      },
      { timeout: 30_000, what: () => `a leader in ${JSON.stringify(seen?.relays)}` },
    )
    assert.match(
      seen?.relays[0]?.name ?? '',
      new RegExp(`^k-entity:${database}\\.outbox:leader \\(connection \\d+\\)$`),
    )
    await relay.stop()
    await outbox.close()
    await admin.close()
  })

  it('SQLite: the same figures from a file, no relays', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ke-admin-'))
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }))
    const file = join(dir, 'app.db')
    const admin: OutboxAdmin = createAdmin({ url: `file:${file}` })
    assert.equal(admin.database, 'SQLite')
    await assert.rejects(admin.status(), (error: unknown) => isKEntityError(error, ErrorCodes.NOT_MIGRATED))
    await admin.migrate()
    const { DatabaseSync } = await import('node:sqlite')
    const db = new DatabaseSync(file)
    const now = Date.now()
    const insert = db.prepare(
      'INSERT INTO k_entity_outbox (topic, created_at, attempts, available_at) VALUES (?, ?, ?, ?)',
    )
    for (let i = 0; i < 5; i++) insert.run('status-a', now - 60_000, 0, now)
    insert.run('status-b', now, 1, now + 3_600_000)
    insert.run('status-b', now, 1, now + 3_600_000)
    insert.run('status-b', now, 0, now)
    db.exec(
      `INSERT INTO k_entity_outbox_dead_letters (message_id, topic, attempts, errors, created_at) VALUES (1, 'status-a', 1, '[]', 0), (2, 'status-a', 1, '[]', 0), (3, 'status-c', 1, '[]', 0)`,
    )
    db.close()
    const status = await admin.status()
    assertExactFigures(status)
    assert.deepEqual(status.relays, [])
    const capped = await admin.status({ countCap: 4 })
    assertCappedFigures(capped)
    assert.equal(capped.pending, 8, 'SQLite estimates by the id range')
  })

  it('PGlite: outbox.admin() gives the same figures, no relays', async () => {
    const { openPgliteOutbox } = await import('../src/adapters/pglite/index.ts')
    const outbox = await openPgliteOutbox({ topics: topics() })
    cleanups.push(() => outbox.close())
    await outbox.migrate()
    await outbox.transaction(async (_tx, p) => {
      for (let i = 0; i < 5; i++) await p.a.produce(`a${i}`, { key: `k${i}` })
      for (let i = 0; i < 3; i++) await p.b.produce(`b${i}`, { key: `k${i}` })
    })
    await outbox.db.exec(`UPDATE k_entity.outbox SET created_at = now() - interval '60 seconds' WHERE topic = 'status-a';
UPDATE k_entity.outbox SET attempts = 1, available_at = now() + interval '1 hour' WHERE id IN (SELECT id FROM k_entity.outbox WHERE topic = 'status-b' ORDER BY id LIMIT 2);
INSERT INTO k_entity.outbox_dead_letters (message_id, topic, attempts, errors, created_at) VALUES (1, 'status-a', 1, '[]', now()), (2, 'status-a', 1, '[]', now()), (3, 'status-c', 1, '[]', now())`)
    const admin = outbox.admin()
    assert.equal(admin.database, 'PGlite')
    const status = await admin.status()
    assertExactFigures(status)
    assert.deepEqual(status.relays, [])
    assertCappedFigures(await admin.status({ countCap: 4 }))
  })

  it('refuses bad options, saying how to fix them', async () => {
    const admin = createAdmin({ url: DATABASE_URL })
    for (const bad of [0, -1, 1.5, 'x', 20_000_000]) {
      await assert.rejects(
        admin.status({ countCap: bad as number }),
        (error: unknown) =>
          isKEntityError(error, ErrorCodes.INVALID_ARGUMENT) && /countCap/.test(error.message),
      )
    }
    assert.throws(
      () => createAdmin({ url: 'http://example.com/x' }),
      /postgres:\/\/, mysql:\/\/, mariadb:\/\//,
    )
    assert.throws(
      () => createAdmin({ url: DATABASE_URL, schema: 'Bad-Name' }),
      (error: unknown) => isKEntityError(error, ErrorCodes.INVALID_IDENTIFIER),
    )
    assert.throws(
      () => createAdmin({ database: 'oracle' as never, url: DATABASE_URL }),
      /'postgres', 'mysql' or 'sqlite'/,
    )
    assert.throws(() => createAdmin({ url: ':memory:' }), /in-memory/)
  })
})
