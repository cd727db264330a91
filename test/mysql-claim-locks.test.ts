// The MySQL claim's locks on a small outbox (real MariaDB/MySQL, no Kafka). A relay that keeps up
// leaves a few rows; with statistics that say so, MariaDB 10.11 read the outbox with a full scan
// through a join buffer in the claim's locking statements, and kept every row it read locked
// until the claim ended. A slow claim then hid older rows of keys it never took from the relays
// that held those keys, which sent the younger rows first (report-mariaorder.md). Each test runs
// `ANALYZE TABLE` on the few rows, so the statistics are those of a relay that keeps up.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import mysql from 'mysql2/promise'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { openMysql2Session } from '../src/adapters/mysql2/session.ts'
import type { OutboxTable } from '../src/core/seams.ts'
import { keyLockSlot } from '../src/dialects/mysql/names.ts'
import { MysqlRelayStore } from '../src/dialects/mysql/relay-store.ts'
import { claimIdsSql, deleteSql, failureStatements } from '../src/dialects/mysql/sql.ts'
import { defineTopic } from '../src/index.ts'
import { dropDatabase, MYSQL_URL } from './contract/mysql-support.ts'

const database = `kentity_claimlocks_${process.pid}`
const table: OutboxTable = { schema: database, table: 'outbox' }
const KEY_A = 111_111
const KEY_B = 222_222

function urlFor(db: string): string {
  const url = new URL(MYSQL_URL)
  url.pathname = `/${db}`
  return url.toString()
}

let admin: mysql.Connection

/** A fresh outbox holding `rows` (ordering hashes, in id order); returns their ids. */
async function outboxWith(rows: number[]): Promise<string[]> {
  await admin.query(`DELETE FROM \`${database}\`.outbox`)
  const ids: string[] = []
  for (const hash of rows) {
    const [result] = (await admin.query(
      `INSERT INTO \`${database}\`.outbox (topic, \`key\`, value, ordering_hash) VALUES ('t', 'k', 'v', ?)`,
      [hash],
    )) as [{ insertId: number }, unknown]
    ids.push(String(result.insertId))
  }
  await admin.query(`ANALYZE TABLE \`${database}\`.outbox`)
  return ids
}

/** Which of `ids` another session can lock right now (one primary-key lookup each). */
async function freeRows(ids: string[]): Promise<string[]> {
  const other = await mysql.createConnection(MYSQL_URL)
  try {
    await other.query('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED')
    await other.query('START TRANSACTION')
    const free: string[] = []
    for (const id of ids) {
      const [rows] = (await other.query(
        `SELECT id FROM \`${database}\`.outbox WHERE id = ? FOR UPDATE SKIP LOCKED`,
        [id],
      )) as [unknown[], unknown]
      if (rows.length > 0) free.push(id)
    }
    await other.query('ROLLBACK')
    return free
  } finally {
    await other.end()
  }
}

/** Runs `statement` in an open READ COMMITTED transaction and returns which of `others` stay free meanwhile. */
async function othersFreeDuring(statement: { text: string; values?: unknown[] }, others: string[]) {
  const session = await mysql.createConnection(MYSQL_URL)
  try {
    await session.query('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED')
    await session.query('START TRANSACTION')
    await session.query(statement.text, statement.values)
    return await freeRows(others)
  } finally {
    await session.query('ROLLBACK').catch(() => {})
    await session.end()
  }
}

before(async () => {
  admin = await mysql.createConnection(MYSQL_URL)
  await dropDatabase(database)
  const outbox = createMysqlOutbox({
    topics: { t: defineTopic<string>({ name: 't', key: (s) => s }) },
    schema: database,
  })
  await outbox.migrate(MYSQL_URL)
  await admin.query(`CREATE DATABASE IF NOT EXISTS \`${database}_relay\``)
})

after(async () => {
  await dropDatabase(database)
  await dropDatabase(`${database}_relay`)
  await admin.end()
})

describe('MySQL claim statements on a small outbox lock only the rows they name', () => {
  it('claim step 2, the delete and the failure update leave the other rows free', async () => {
    const [a1, b1, a2, b2] = await outboxWith([KEY_A, KEY_B, KEY_A, KEY_B])
    const others = [a1, a2] as string[]
    const named = [b1, b2] as string[]
    assert.deepEqual(await othersFreeDuring({ text: claimIdsSql(table, named, true) }, others), others)
    assert.deepEqual(await othersFreeDuring({ text: deleteSql(table, named) }, others), others)
    const [update] = failureStatements(table, [
      { ids: named, error: 'test', retryInMs: 1000, countAttempt: true },
    ])
    assert.ok(update)
    assert.deepEqual(await othersFreeDuring(update, others), others)
  })

  it('a slow claim of one key does not hide the older rows of another key from the relay that holds it', async () => {
    // a1 < b1 < a2: relay X claims while key A's claim slot is held elsewhere, so it takes b1 only
    // and keeps its claim open (its send is slow). Then a3 of key A commits. Relay Y, which wins
    // key A, must get a1, a2, a3 in that order; with the scan's locks it got a3 alone.
    const [a1, b1, a2] = await outboxWith([KEY_A, KEY_B, KEY_A])
    const store = () =>
      new MysqlRelayStore({
        table,
        connect: () => openMysql2Session(urlFor(`${database}_relay`), 'relay'),
        sessionTimeout: 30_000,
        concurrent: true,
      })
    const x = store()
    const y = store()
    const slotHolder = await mysql.createConnection(MYSQL_URL)
    try {
      await x.connect()
      await y.connect()
      await slotHolder.query('START TRANSACTION')
      await slotHolder.query(
        `SELECT slot FROM \`${database}\`.outbox_claim_locks WHERE slot = ? FOR UPDATE`,
        [keyLockSlot(KEY_A)],
      )
      const taken = await x.claim(100)
      assert.deepEqual(
        taken.map((m) => m.id),
        [b1],
      )
      await slotHolder.query('ROLLBACK')
      const [inserted] = (await admin.query(
        `INSERT INTO \`${database}\`.outbox (topic, \`key\`, value, ordering_hash) VALUES ('t', 'k', 'v', ?)`,
        [KEY_A],
      )) as [{ insertId: number }, unknown]
      const a3 = String(inserted.insertId)
      const second = await y.claim(100)
      assert.deepEqual(
        second.map((m) => m.id),
        [a1, a2, a3],
        'the relay holding key A gets its rows oldest first, none hidden by the other claim',
      )
      await y.abandon()
      await x.abandon()
    } finally {
      await slotHolder.end().catch(() => {})
      await x.close()
      await y.close()
    }
  })
})
