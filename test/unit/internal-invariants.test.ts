// Issue 22: an internal invariant that fails is `KE_INTERNAL` (never retried; a relay stops on it),
// never a plain Error, which the relay would take for a passing database or network condition
// and retry forever.
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import { describe, it } from 'node:test'
import { toDrizzleSql } from '../../src/adapters/drizzle/bindings.ts'
import { toKnexBindings } from '../../src/adapters/knex/bindings.ts'
import { ErrorCodes, isKEntityError } from '../../src/core/errors.ts'
import { deleteSql as mysqlDelete, toMessage as mysqlMessage } from '../../src/dialects/mysql/sql.ts'
import { BinaryClaimDecoder } from '../../src/dialects/postgres/binary-claim.ts'
import { lastResult } from '../../src/dialects/postgres/session.ts'
import { deleteSql as postgresDelete, retryDelay } from '../../src/dialects/postgres/sql.ts'
import { deleteSql as sqliteDelete } from '../../src/dialects/sqlite/sql.ts'

const ROOT = resolve(import.meta.dirname, '../..')
const TABLE = { schema: 'public', table: 'outbox' }

function isInternal(error: unknown): boolean {
  return isKEntityError(error, ErrorCodes.INTERNAL) && error.retryable === false
}

describe('internal invariants are KE_INTERNAL', () => {
  it('ids that did not come from the database', () => {
    assert.throws(() => postgresDelete(TABLE, ['1; DROP TABLE x']), isInternal)
    assert.throws(() => mysqlDelete(TABLE, ['abc']), isInternal)
    assert.throws(() => sqliteDelete(TABLE, ['12345678901234567']), isInternal)
  })

  it('a retry delay that is not a number of ms', () => {
    assert.throws(() => retryDelay(Number.NaN), isInternal)
    assert.throws(() => retryDelay(-1), isInternal)
  })

  it('a claim answer in an unexpected shape', () => {
    assert.throws(() => new BinaryClaimDecoder().push(Buffer.from('not binary COPY data at all')), isInternal)
    assert.throws(() => lastResult([]), isInternal)
    assert.throws(
      () =>
        mysqlMessage({
          id: '1',
          topic: 't',
          key: 'text',
          value: null,
          headers: null,
          ordering_hash: null,
          attempts: 0,
        }),
      isInternal,
    )
  })

  it('a statement whose placeholders do not match its values', () => {
    assert.throws(() => toKnexBindings({ text: 'SELECT $2', values: [1] }), isInternal)
    assert.throws(() => toDrizzleSql({ text: 'SELECT $3', values: [] }), isInternal)
  })

  it('no plain `throw new Error(` is left in src', () => {
    const offenders = sourceFiles(join(ROOT, 'src'))
      .map((path) => relative(ROOT, path))
      .filter((path) => readFileSync(join(ROOT, path), 'utf8').includes('throw new Error('))
    assert.deepEqual(offenders, [])
  })
})

function sourceFiles(directory: string): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const path = join(directory, entry.name)
    if (entry.isDirectory()) return sourceFiles(path)
    return entry.name.endsWith('.ts') ? [path] : []
  })
}
