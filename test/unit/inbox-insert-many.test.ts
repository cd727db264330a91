// The inbox batch's multi-row INSERT: every row's values stay together (a shifted placeholder or
// array would store one message's key under another's offset), and an empty batch is refused.
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
  it("PostgreSQL: group and retention once, then one array per column in the entries' order; the text does not depend on the batch's size", () => {
    const statement = postgresInbox.insertMany(table, entries)
    assert.deepEqual(statement.values, [
      'g',
      '60000',
      entries.map((entry) => entry.key),
      entries.map((entry) => entry.topic),
      entries.map((entry) => entry.partition),
      entries.map((entry) => String(entry.offset)),
    ])
    assert.match(statement.text, /^INSERT INTO "shop"\."outbox_inbox" /)
    assert.match(
      statement.text,
      /SELECT \$1, m\.key, m\.topic, m\.partition, m\."offset", now\(\) \+ \$2::bigint \* interval '1 millisecond'\nFROM unnest\(\$3::text\[\], \$4::text\[\], \$5::int\[\], \$6::bigint\[\]\) AS m\(key, topic, partition, "offset"\)$/,
    )
    // One text (and name) for every batch size: prepared once per connection.
    const one = postgresInbox.insertMany(table, entries.slice(0, 1))
    assert.equal(one.text, statement.text)
    assert.equal(one.name, statement.name)
    assert.equal(statement.name, 'ke_inbox_insert_shop_outbox')
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

  it('refuses an empty batch as an internal error', () => {
    for (const inbox of [postgresInbox, mysqlInbox]) {
      assert.throws(
        () => inbox.insertMany(table, []),
        (error: unknown) => isKEntityError(error),
      )
    }
  })
})
