// The inbox batch's multi-row INSERT: every row's placeholders point at its own values (a shifted
// number would store one message's key under another's offset), and an empty batch is refused.
// The statements themselves run against real databases in test/consumer-inbox-batch.test.ts.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { InboxEntry } from '../../src/consumer/inbox-sql.ts'
import { isKEntityError } from '../../src/core/errors.ts'
import { mysqlInbox } from '../../src/dialects/mysql/inbox.ts'
import { postgresInbox } from '../../src/dialects/postgres/inbox.ts'

const table = { schema: 'shop', table: 'outbox' }
const entries: InboxEntry[] = [0, 1, 2].map((i) => ({
  group: 'g',
  key: `id:m-${i}`,
  topic: 'orders',
  partition: i,
  offset: BigInt(100 + i),
  retentionMs: 60_000,
}))

describe('inbox insertMany()', () => {
  it('PostgreSQL: group and retention once, then key, topic, partition, offset per row', () => {
    const statement = postgresInbox.insertMany(table, entries)
    assert.deepEqual(statement.values, [
      'g',
      '60000',
      ...entries.flatMap((entry) => [entry.key, entry.topic, entry.partition, String(entry.offset)]),
    ])
    const rows = [
      ...statement.text.matchAll(/\(\$1, \$(\d+), \$(\d+), \$(\d+), \$(\d+)::bigint, now\(\) \+ \$2/g),
    ]
    assert.deepEqual(
      rows.map((row) => row.slice(1).map(Number)),
      [
        [3, 4, 5, 6],
        [7, 8, 9, 10],
        [11, 12, 13, 14],
      ],
    )
    assert.match(statement.text, /^INSERT INTO "shop"\."outbox_inbox" /)
  })

  it('MySQL/MariaDB: one row of six placeholders per entry, values in the same order as insert()', () => {
    const statement = mysqlInbox.insertMany(table, entries)
    assert.equal(statement.text.split('?').length - 1, statement.values.length)
    assert.deepEqual(
      statement.values,
      entries.flatMap((entry) => mysqlInbox.insert(table, entry).values),
    )
    assert.match(statement.text, /^INSERT INTO `shop`\.`outbox_inbox` /)
  })

  it('MySQL/MariaDB: only a full batch (recurring) is named, so mysql2 prepares it once per connection', () => {
    const full = mysqlInbox.insertMany(table, entries, true)
    const partial = mysqlInbox.insertMany(table, entries, false)
    assert.equal(full.name, 'ke_inbox_3')
    assert.equal(partial.name, undefined)
    assert.equal(mysqlInbox.insertMany(table, entries).name, undefined)
    assert.equal(full.text, partial.text)
    assert.deepEqual(full.values, partial.values)
  })

  it("PostgreSQL: a full batch stays unnamed (no prepared statement on the app's client)", () => {
    assert.equal(postgresInbox.insertMany(table, entries, true).name, undefined)
  })

  it('refuses an empty batch as an internal error', () => {
    for (const inbox of [postgresInbox, mysqlInbox]) {
      assert.throws(
        () => inbox.insertMany(table, []),
        (error: unknown) => isKEntityError(error),
      )
    }
  })
})
