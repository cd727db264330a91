// Issue 22: one table per dialect from the database's codes to a stable k-entity code and
// `retryable`. Pure table tests: driver errors are built the way each driver shapes them
// (node-postgres / postgres.js / PGlite `code`, mysql2 / mariadb `errno` and `code`,
// better-sqlite3 `code`, node:sqlite `errcode`), wrapped the way ORMs wrap them.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { databaseError } from '../../src/core/database-errors.ts'
import { ErrorCodes, internalCause, internalError, KEntityError } from '../../src/core/errors.ts'
import type { Logger } from '../../src/core/logger.ts'
import { RelayLog } from '../../src/core/relay-log.ts'
import { isRetryable } from '../../src/core/retry.ts'
import { classifyFailure as mysql } from '../../src/dialects/mysql/errors.ts'
import { classifyFailure as postgres } from '../../src/dialects/postgres/errors.ts'
import { noOpenClaim, relayStoreError } from '../../src/dialects/shared/relay-store-errors.ts'
import { classifyFailure as sqlite } from '../../src/dialects/sqlite/errors.ts'
import { explainDatabaseError } from '../../src/outbox/not-migrated.ts'

const { STORE_FAILED, NOT_MIGRATED, TRANSACTION_ABORTED } = ErrorCodes

function driverError(fields: Record<string, unknown>, message = 'driver says no'): Error {
  return Object.assign(new Error(message), fields)
}

type Expected = readonly [code: string, retryable: boolean]

function assertTable(
  classify: typeof postgres,
  cases: Record<string, Expected>,
  shape: (key: string) => Record<string, unknown>,
): void {
  for (const [key, [code, retryable]] of Object.entries(cases)) {
    const failure = classify(driverError(shape(key)))
    assert.ok(failure, `${key} is not classified`)
    assert.deepEqual([failure.code, failure.retryable], [code, retryable], key)
    assert.ok(failure.explanation.length > 20, `${key} has no explanation`)
  }
}

describe('PostgreSQL SQLSTATEs (node-postgres, postgres.js, PGlite)', () => {
  const cases: Record<string, Expected> = {
    '40001': [STORE_FAILED, true], // serialization_failure
    '40P01': [STORE_FAILED, true], // deadlock_detected
    '08000': [STORE_FAILED, true], // connection_exception
    '08003': [STORE_FAILED, true],
    '08006': [STORE_FAILED, true],
    '08001': [STORE_FAILED, true], // by its class
    '08P01': [STORE_FAILED, true],
    '57P01': [STORE_FAILED, true], // admin_shutdown
    '57P02': [STORE_FAILED, true], // crash_shutdown
    '57P03': [STORE_FAILED, true], // cannot_connect_now
    '57P05': [STORE_FAILED, true], // idle_session_timeout
    '25006': [STORE_FAILED, true], // read_only_sql_transaction: a failover in progress
    '55P03': [STORE_FAILED, true], // lock_not_available
    '57014': [STORE_FAILED, true], // query_canceled (statement_timeout)
    '53300': [STORE_FAILED, true], // too_many_connections
    '53200': [STORE_FAILED, true], // out_of_memory
    '53000': [STORE_FAILED, true], // insufficient_resources, by its class
    '53100': [STORE_FAILED, false], // disk_full
    '53400': [STORE_FAILED, false], // configuration_limit_exceeded
    '25P02': [TRANSACTION_ABORTED, false], // in_failed_sql_transaction
    '42P01': [NOT_MIGRATED, false],
    '3F000': [NOT_MIGRATED, false],
    '28P01': [STORE_FAILED, false],
    '28000': [STORE_FAILED, false],
    XX001: [STORE_FAILED, false],
    XX002: [STORE_FAILED, false],
    CONNECTION_CLOSED: [STORE_FAILED, true], // postgres.js
    CONNECTION_ENDED: [STORE_FAILED, true],
    CONNECTION_DESTROYED: [STORE_FAILED, true],
    CONNECT_TIMEOUT: [STORE_FAILED, true],
    ECONNRESET: [STORE_FAILED, true],
    ECONNREFUSED: [STORE_FAILED, true],
    EPIPE: [STORE_FAILED, true],
  }

  it('maps every listed code to its stable code and retryable', () => {
    assertTable(postgres, cases, (code) => ({ code }))
  })

  it('names the SQLSTATE as the database documents it', () => {
    assert.equal(postgres(driverError({ code: '40P01' }))?.reason, 'SQLSTATE 40P01')
    assert.equal(postgres(driverError({ code: 'EPIPE' }))?.reason, 'EPIPE')
  })

  it('leaves the codes of user errors and unknown shapes alone', () => {
    for (const code of ['23505', '42601', '22P02', '40002', 'constructor', 'toString', '__proto__']) {
      assert.equal(postgres(driverError({ code })), undefined, code)
    }
    assert.equal(postgres(new Error('no code')), undefined)
    assert.equal(postgres(undefined), undefined)
    assert.equal(postgres('40P01'), undefined)
  })

  it('finds the code on an error an ORM wrapped (cause, originalError, errors)', () => {
    const inner = driverError({ code: '40P01' })
    assert.equal(postgres(new Error('Failed query', { cause: inner }))?.code, STORE_FAILED)
    assert.equal(postgres(Object.assign(new Error('x'), { originalError: inner }))?.retryable, true)
    assert.equal(postgres(new AggregateError([new Error('a'), inner]))?.reason, 'SQLSTATE 40P01')
  })
})

describe('MySQL / MariaDB errno (mysql2, mariadb)', () => {
  const cases: Record<string, Expected> = {
    1213: [STORE_FAILED, true], // ER_LOCK_DEADLOCK
    1205: [STORE_FAILED, true], // ER_LOCK_WAIT_TIMEOUT
    1290: [STORE_FAILED, true], // --read-only
    1836: [STORE_FAILED, true], // ER_READ_ONLY_MODE
    2006: [STORE_FAILED, true], // CR_SERVER_GONE_ERROR
    2013: [STORE_FAILED, true], // CR_SERVER_LOST
    4031: [STORE_FAILED, true], // ER_CLIENT_INTERACTION_TIMEOUT
    1927: [STORE_FAILED, true], // ER_CONNECTION_KILLED
    1053: [STORE_FAILED, true], // ER_SERVER_SHUTDOWN
    1040: [STORE_FAILED, true], // ER_CON_COUNT_ERROR
    3024: [STORE_FAILED, true], // ER_QUERY_TIMEOUT
    1969: [STORE_FAILED, true], // ER_STATEMENT_TIMEOUT
    1317: [STORE_FAILED, true], // ER_QUERY_INTERRUPTED
    1146: [NOT_MIGRATED, false],
    1049: [NOT_MIGRATED, false],
    1045: [STORE_FAILED, false],
    1044: [STORE_FAILED, false],
  }
  const names: Record<string, Expected> = {
    ER_LOCK_DEADLOCK: [STORE_FAILED, true],
    ER_LOCK_WAIT_TIMEOUT: [STORE_FAILED, true],
    ER_NO_SUCH_TABLE: [NOT_MIGRATED, false],
    PROTOCOL_CONNECTION_LOST: [STORE_FAILED, true], // mysql2
    ER_SOCKET_UNEXPECTED_CLOSE: [STORE_FAILED, true], // mariadb
    ER_CONNECTION_ALREADY_CLOSED: [STORE_FAILED, true],
    ER_GET_CONNECTION_TIMEOUT: [STORE_FAILED, true],
    ECONNRESET: [STORE_FAILED, true],
  }

  it('maps every listed errno to its stable code and retryable', () => {
    assertTable(mysql, cases, (errno) => ({ errno: Number(errno), code: 'ER_SOMETHING' }))
    assert.equal(mysql(driverError({ errno: 1213 }))?.reason, 'MySQL errno 1213')
  })

  it('maps the drivers’ symbolic codes of errors without a server errno', () => {
    assertTable(mysql, names, (code) => ({ code }))
  })

  it('leaves user errors alone', () => {
    for (const errno of [1062, 1064, 1452, 1406]) assert.equal(mysql(driverError({ errno })), undefined)
    assert.equal(mysql(driverError({ code: 'ER_DUP_ENTRY', errno: 1062 })), undefined)
  })
})

describe('SQLite result codes (better-sqlite3, node:sqlite)', () => {
  const cases: Record<string, Expected> = {
    SQLITE_BUSY: [STORE_FAILED, true],
    SQLITE_BUSY_SNAPSHOT: [STORE_FAILED, true],
    SQLITE_BUSY_RECOVERY: [STORE_FAILED, true],
    SQLITE_LOCKED: [STORE_FAILED, true],
    SQLITE_LOCKED_SHAREDCACHE: [STORE_FAILED, true],
    SQLITE_READONLY: [STORE_FAILED, false],
    SQLITE_READONLY_DBMOVED: [STORE_FAILED, false],
    SQLITE_READONLY_RECOVERY: [STORE_FAILED, true],
    SQLITE_IOERR: [STORE_FAILED, true],
    SQLITE_IOERR_SHORT_READ: [STORE_FAILED, true],
    SQLITE_FULL: [STORE_FAILED, false],
    SQLITE_CORRUPT: [STORE_FAILED, false],
    SQLITE_CORRUPT_INDEX: [STORE_FAILED, false],
    SQLITE_NOTADB: [STORE_FAILED, false],
  }
  // node:sqlite's extended numbers: the primary code in the low byte.
  const numbers: Record<string, Expected> = {
    5: [STORE_FAILED, true], // SQLITE_BUSY
    517: [STORE_FAILED, true], // SQLITE_BUSY_SNAPSHOT
    6: [STORE_FAILED, true], // SQLITE_LOCKED
    8: [STORE_FAILED, false], // SQLITE_READONLY
    264: [STORE_FAILED, true], // SQLITE_READONLY_RECOVERY
    10: [STORE_FAILED, true], // SQLITE_IOERR
    13: [STORE_FAILED, false], // SQLITE_FULL
    11: [STORE_FAILED, false], // SQLITE_CORRUPT
    779: [STORE_FAILED, false], // SQLITE_CORRUPT_INDEX
  }

  it('maps better-sqlite3 codes, primary and extended', () => {
    assertTable(sqlite, cases, (code) => ({ code }))
  })

  it('maps node:sqlite errcodes by their primary code', () => {
    assertTable(sqlite, numbers, (errcode) => ({ code: 'ERR_SQLITE_ERROR', errcode: Number(errcode) }))
    assert.equal(sqlite(driverError({ code: 'ERR_SQLITE_ERROR', errcode: 517 }))?.reason, 'SQLITE_BUSY')
  })

  it('a missing table is KE_NOT_MIGRATED (SQLite says so only in the message)', () => {
    const failure = sqlite(driverError({ code: 'SQLITE_ERROR' }, 'no such table: main.outbox'))
    assert.equal(failure?.code, NOT_MIGRATED)
  })

  it('leaves constraint and syntax errors alone', () => {
    assert.equal(sqlite(driverError({ code: 'SQLITE_CONSTRAINT_UNIQUE' })), undefined)
    assert.equal(sqlite(driverError({ code: 'SQLITE_ERROR' }, 'near "x": syntax error')), undefined)
    assert.equal(sqlite(driverError({ code: 'ERR_SQLITE_ERROR', errcode: 19 })), undefined)
  })
})

describe('the KEntityError a classified error becomes', () => {
  it('keeps the driver error as cause, says what happened and what to do', () => {
    const cause = driverError({ code: '40P01' }, 'deadlock detected')
    const error = explainDatabaseError(cause, postgres, '"public"."outbox"') as KEntityError
    assert.ok(error instanceof KEntityError)
    assert.equal(error.code, STORE_FAILED)
    assert.equal(error.retryable, true)
    assert.equal(error.cause, cause)
    assert.match(
      error.message,
      /deadlock.*run the whole transaction again.*SQLSTATE 40P01: deadlock detected/,
    )
    assert.equal(isRetryable(error), true)
  })

  it('a permanent condition is not retryable', () => {
    const error = databaseError(sqlite(driverError({ code: 'SQLITE_CORRUPT' })) as never, new Error('x'))
    assert.equal(error.retryable, false)
    assert.equal(isRetryable(error), false)
  })

  it('a missing table names the table and what to run; retryable for the relay only', () => {
    const cause = driverError({ code: '42P01' }, 'relation "outbox" does not exist')
    const produced = explainDatabaseError(cause, postgres, '"app"."outbox"') as KEntityError
    assert.equal(produced.code, NOT_MIGRATED)
    assert.equal(produced.retryable, false)
    assert.match(produced.message, /"app"\."outbox".*outbox\.migrate\(connection\)/)
    const relayed = relayStoreError(cause, postgres, '"app"."outbox"') as KEntityError
    assert.equal(relayed.code, NOT_MIGRATED)
    assert.equal(relayed.retryable, true)
  })

  it('redacts a password the driver put in its message', () => {
    const cause = driverError({ code: 'ECONNREFUSED' }, 'connect to postgres://app:s3cret@db:5432 refused')
    const error = explainDatabaseError(cause, postgres, undefined) as KEntityError
    assert.doesNotMatch(error.message, /s3cret/)
  })

  it('unknown errors and k-entity’s own pass through unchanged', () => {
    const unknown = driverError({ code: '23505' })
    assert.equal(explainDatabaseError(unknown, postgres, undefined), unknown)
    assert.equal(relayStoreError(unknown, postgres, 't'), unknown)
    const internal = internalError('a claim is already open on this relay session')
    assert.equal(relayStoreError(internal, postgres, 't'), internal)
    assert.equal(internalCause(relayStoreError(internal, postgres, 't')), internal)
    const already = new KEntityError(ErrorCodes.NO_TRANSACTION, 'x', {
      cause: driverError({ code: '25P02' }),
    })
    assert.equal(explainDatabaseError(already, postgres, undefined), already)
  })
})

describe('complete() without an open claim', () => {
  it('a claim lost with its session is a retryable KE_STORE_FAILED, never fatal', () => {
    const lost = noOpenClaim('complete()', true)
    assert.equal(lost.code, STORE_FAILED)
    assert.equal(lost.retryable, true)
    assert.equal(internalCause(lost), undefined)
  })

  it('a claim never opened is KE_INTERNAL', () => {
    const bug = noOpenClaim('complete()', false)
    assert.equal(bug.code, ErrorCodes.INTERNAL)
    assert.equal(internalCause(bug), bug)
  })
})

describe('the relay log tells database conditions apart by the driver’s code', () => {
  it('a deadlock and then a lost connection, both KE_STORE_FAILED, are two lines', () => {
    const lines: string[] = []
    const capture: Logger = {
      error: (_context, message) => lines.push(String(message)),
      warn: (_context, message) => lines.push(String(message)),
      info: (_context, message) => lines.push(String(message)),
    }
    const log = new RelayLog(capture, {}, 30_000, () => 0)
    const wrap = (code: string) => explainDatabaseError(driverError({ code }), postgres, undefined)
    log.failed('claim', wrap('40P01'), 1000)
    log.failed('claim', wrap('40P01'), 1000)
    log.failed('claim', wrap('57P01'), 1000)
    assert.equal(lines.length, 2, lines.join('\n'))
    assert.match(lines[0] ?? '', /deadlock/)
    assert.match(lines[1] ?? '', /ended the session/)
  })
})

describe("Prisma 7's driver adapters (the database's error under meta.driverAdapterError)", () => {
  /** Shaped as @prisma/client 7 throws it: a known request error whose meta holds the adapter's error. */
  function prismaError(prismaCode: string, cause: Record<string, unknown>): Error {
    const adapterError = Object.assign(new Error('driver adapter error'), {
      name: 'DriverAdapterError',
      cause,
    })
    return Object.assign(new Error(`Raw query failed. Code: \`${String(cause.originalCode)}\``), {
      name: 'PrismaClientKnownRequestError',
      code: prismaCode,
      meta: { driverAdapterError: adapterError },
    })
  }

  it('PostgreSQL (@prisma/adapter-pg): the SQLSTATE of a plain error and of one mapped to a Prisma kind', () => {
    const deadlock = postgres(
      prismaError('P2010', {
        originalCode: '40P01',
        kind: 'postgres',
        code: '40P01',
        message: 'deadlock detected',
      }),
    )
    assert.deepEqual(
      [deadlock?.code, deadlock?.retryable, deadlock?.reason],
      [STORE_FAILED, true, 'SQLSTATE 40P01'],
    )
    const conflict = postgres(
      prismaError('P2034', { originalCode: '40001', kind: 'TransactionWriteConflict' }),
    )
    assert.deepEqual([conflict?.retryable, conflict?.reason], [true, 'SQLSTATE 40001'])
  })

  it('MariaDB (@prisma/adapter-mariadb): the errno kept as text', () => {
    const deadlock = mysql(
      prismaError('P2010', { originalCode: '1213', kind: 'mysql', code: 1213, message: 'Deadlock found' }),
    )
    assert.deepEqual([deadlock?.retryable, deadlock?.reason], [true, 'MySQL errno 1213'])
    assert.equal(mysql(prismaError('P2010', { originalCode: 'N/A', kind: 'mysql' })), undefined)
  })

  it('a Prisma code without a database code stays unclassified', () => {
    assert.equal(
      postgres(prismaError('P1001', { originalCode: 'N/A', kind: 'DatabaseNotReachable' })),
      undefined,
    )
  })
})
