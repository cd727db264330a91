import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { OutboxRecord } from '../src/core/record.ts'
import { NOTIFY_SPACING_MS, NotifySpacing, postgresDialectFor } from '../src/dialects/postgres/index.ts'

const table = { schema: 'k_entity', table: 'outbox' }
const record: OutboxRecord = {
  topic: 't',
  key: Buffer.from('k'),
  value: Buffer.from('v'),
  headers: [],
  orderingHash: 7,
}
const notifies = (text: string) => text.includes('pg_notify')

describe('NOTIFY spacing (pure logic)', () => {
  it('grants one NOTIFY per window', () => {
    const spacing = new NotifySpacing()
    assert.equal(spacing.take(1000), true)
    assert.equal(spacing.take(1000), false)
    assert.equal(spacing.take(1000 + NOTIFY_SPACING_MS - 0.1), false)
    assert.equal(spacing.take(1000 + NOTIFY_SPACING_MS), true)
    assert.equal(spacing.take(1000 + NOTIFY_SPACING_MS + 1), false)
  })

  it('an outbox notifies with its first write, then not again within the window', () => {
    const dialect = postgresDialectFor(true)
    const [first] = dialect.insert(table, [record])
    const [second] = dialect.insert(table, [record, record])
    assert.ok(first && notifies(first.text), 'the first write carries the NOTIFY')
    assert.ok(second && !notifies(second.text), 'a write within the window does not')
    assert.notEqual(first.name, second.name, 'each form is its own prepared statement')
  })

  it('each outbox spaces its own NOTIFYs, and notify: false never sends one', () => {
    const [a] = postgresDialectFor(true).insert(table, [record])
    const [b] = postgresDialectFor(true).insert(table, [record])
    assert.ok(a && notifies(a.text) && b && notifies(b.text))
    const quiet = postgresDialectFor(false)
    for (let i = 0; i < 3; i++) assert.ok(!notifies(quiet.insert(table, [record])[0]?.text ?? 'pg_notify'))
  })

  it('everyCommit (PGlite) notifies with every write', () => {
    const dialect = postgresDialectFor(true, true)
    for (let i = 0; i < 3; i++) assert.ok(notifies(dialect.insert(table, [record])[0]?.text ?? ''))
  })

  it('a write split into several statements queues its NOTIFY once', () => {
    const statements = postgresDialectFor(true).insert(
      table,
      Array.from({ length: 12_000 }, () => record),
    )
    assert.deepEqual(
      statements.map((statement) => notifies(statement.text)),
      [true, false, false],
    )
  })
})
