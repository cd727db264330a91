// The consumer's filter option and the inbox's duplicate-key recognition, without Kafka or a
// database (the real-broker tests are in test/consumer.test.ts and test/consumer-adapters.test.ts).
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { resolveFilter } from '../../src/consumer/filter.ts'
import type { RawRecord } from '../../src/consumer/message.ts'
import { isKEntityError } from '../../src/core/errors.ts'
import { mysqlInbox } from '../../src/dialects/mysql/inbox.ts'
import { postgresInbox } from '../../src/dialects/postgres/inbox.ts'

function record(headers: [string, string | null][], value: string | null = '{}'): RawRecord {
  return {
    key: Buffer.from('k'),
    value: value === null ? undefined : Buffer.from(value),
    headerEntries: headers.map(([name, v]) => [Buffer.from(name), v === null ? undefined : Buffer.from(v)]),
    topic: 't',
    partition: 0,
    offset: 1n,
    timestamp: 0n,
  } as unknown as RawRecord
}

describe('consumer filter', () => {
  it('headers: byte-equal, any value of a list, every name, the last of a repeated name, absent or null does not match', () => {
    const keep = resolveFilter({ headers: { type: ['A', Buffer.from('B')], region: 'eu' } }, 'x') as (
      raw: RawRecord,
    ) => boolean
    assert.equal(
      keep(
        record([
          ['type', 'A'],
          ['region', 'eu'],
        ]),
      ),
      true,
    )
    assert.equal(
      keep(
        record([
          ['type', 'B'],
          ['region', 'eu'],
        ]),
      ),
      true,
    )
    assert.equal(
      keep(
        record([
          ['type', 'a'],
          ['region', 'eu'],
        ]),
      ),
      false,
      'case counts',
    )
    assert.equal(keep(record([['type', 'A ']])), false)
    assert.equal(keep(record([['type', 'A']])), false, 'every name must match')
    assert.equal(
      keep(
        record([
          ['type', 'A'],
          ['type', 'C'],
          ['region', 'eu'],
        ]),
      ),
      false,
      'the last one counts',
    )
    assert.equal(
      keep(
        record([
          ['type', 'C'],
          ['type', 'A'],
          ['region', 'eu'],
        ]),
      ),
      true,
    )
    assert.equal(
      keep(
        record([
          ['type', null],
          ['region', 'eu'],
        ]),
      ),
      false,
    )
    assert.equal(
      keep(
        record(
          [
            ['type', 'A'],
            ['region', 'eu'],
          ],
          'not json',
        ),
      ),
      true,
      'the value is never read',
    )
    const utf8 = resolveFilter({ headers: { name: 'Zoë' } }, 'x') as (raw: RawRecord) => boolean
    assert.equal(utf8(record([['name', 'Zoë']])), true)
  })

  it('predicate: sees raw bytes; a non-boolean answer is KE_INVALID_ARGUMENT', () => {
    const seen: (string | undefined)[] = []
    const keep = resolveFilter((r: { value: Buffer | null }) => {
      seen.push(r.value?.toString())
      return r.value?.toString() === 'yes'
    }, 'x') as (raw: RawRecord) => boolean
    assert.equal(keep(record([], 'yes')), true)
    assert.equal(keep(record([], null)), false)
    assert.deepEqual(seen, ['yes', undefined])
    const odd = resolveFilter(() => 1 as unknown as boolean, 'consume()') as (raw: RawRecord) => boolean
    assert.throws(
      () => odd(record([])),
      (error: unknown) =>
        isKEntityError(error, 'KE_INVALID_ARGUMENT') && /must return true/.test(String(error)),
    )
  })

  it('refuses bad filters with KE_INVALID_ARGUMENT', () => {
    for (const bad of [
      null,
      'x',
      { headers: {} },
      { headers: { a: [] } },
      { headers: { a: 1 } },
      { other: 1 },
    ]) {
      assert.throws(
        () => resolveFilter(bad, 'consume()'),
        (error: unknown) => isKEntityError(error, 'KE_INVALID_ARGUMENT'),
      )
    }
    assert.equal(resolveFilter(undefined, 'x'), undefined)
  })
})

describe('inbox duplicate-key recognition', () => {
  it("recognises the drivers' errors and Prisma's raw query failure (P2010), not other errors", () => {
    const prisma = (code: string) =>
      Object.assign(new Error('Raw query failed'), { code: 'P2010', meta: { code } })
    assert.equal(
      postgresInbox.isDuplicate(
        Object.assign(new Error('dup'), { code: '23505', constraint: 'outbox_inbox_pkey' }),
      ),
      true,
    )
    assert.equal(
      postgresInbox.isDuplicate(
        Object.assign(new Error('dup'), { code: '23505', constraint: 'orders_pkey' }),
      ),
      false,
    )
    assert.equal(postgresInbox.isDuplicate(prisma('23505')), true)
    assert.equal(postgresInbox.isDuplicate(prisma('23503')), false)
    assert.equal(
      postgresInbox.isDuplicate(Object.assign(new Error('x'), { code: 'P2002', meta: { code: '23505' } })),
      false,
    )
    assert.equal(
      mysqlInbox.isDuplicate(Object.assign(new Error('dup'), { errno: 1062, code: 'ER_DUP_ENTRY' })),
      true,
    )
    assert.equal(mysqlInbox.isDuplicate(prisma('1062')), true)
    assert.equal(mysqlInbox.isDuplicate(prisma('1213')), false)
  })
})
