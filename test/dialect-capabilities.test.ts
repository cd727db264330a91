// Capability flags: an option a database cannot honour is refused with an error that names the
// option, the database and what to do, never silently ignored. Nothing here connects: every
// refusal happens when the outbox or the relay object is created.
import assert from 'node:assert/strict'
import { DatabaseSync } from 'node:sqlite'
import { after, describe, it } from 'node:test'
import { PGlite } from '@electric-sql/pglite'
import Database from 'better-sqlite3'
import { createBetterSqliteOutbox } from '../src/adapters/better-sqlite3/index.ts'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { createNodeSqliteOutbox } from '../src/adapters/node-sqlite/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { createPgliteOutbox } from '../src/adapters/pglite/index.ts'
import { defineTopic, ErrorCodes, type OutboxRelay } from '../src/index.ts'

const topics = { orders: defineTopic<{ id: number }>({ name: 'capabilities.orders' }) }
const direct = { sent: defineTopic<{ id: number }>({ name: 'capabilities.direct', outbox: false }) }
// Never contacted: relays are created, not started.
const kafka = { brokers: ['127.0.0.1:1'] }

function refused(make: () => unknown, ...parts: RegExp[]): void {
  assert.throws(make, (error: unknown) => {
    assert.equal((error as { code?: unknown }).code, ErrorCodes.INVALID_ARGUMENT)
    for (const part of parts) assert.match((error as Error).message, part)
    return true
  })
}

const relays: OutboxRelay[] = []
after(async () => {
  for (const relay of relays) await relay.stop()
})

describe('capability flags refuse what a database cannot do', () => {
  it('PostgreSQL takes every mode, pipelining and LISTEN; refuses the options of other databases', () => {
    const outbox = createPgOutbox({ topics, kafka })
    for (const mode of ['single', 'exclusive', 'concurrent'] as const) {
      relays.push(outbox.relay({ mode, pipeline: true, listen: true }))
    }
    refused(() => outbox.relay({ busyTimeout: 10 } as never), /'busyTimeout' does not apply to PostgreSQL/)
  })

  it('MySQL/MariaDB takes every mode and pipelining; refuses listen and notify, naming the option and what to do', () => {
    const outbox = createMysqlOutbox({ topics, kafka })
    for (const mode of ['single', 'exclusive', 'concurrent'] as const) {
      relays.push(outbox.relay({ mode, pipeline: true }), outbox.relay({ mode, pipeline: false }))
    }
    refused(() => outbox.relay({ listen: true } as never), /'listen' is not available on MySQL\/MariaDB/)
    refused(
      () => outbox.relay({ busyTimeout: 10 } as never),
      /'busyTimeout' does not apply to MySQL\/MariaDB/,
    )
    refused(
      () => outbox.relay({ mode: 'concurrent', claimSlots: 64 } as never),
      /'claimSlots' does not apply to MySQL\/MariaDB/,
    )
    refused(
      () => createMysqlOutbox({ topics, notify: true } as never),
      /'notify' is not available on MySQL\/MariaDB/,
    )
  })

  for (const [name, open, create] of [
    ['better-sqlite3', () => new Database(':memory:'), createBetterSqliteOutbox],
    ['node:sqlite', () => new DatabaseSync(':memory:'), createNodeSqliteOutbox],
  ] as const) {
    it(`SQLite (${name}) refuses other modes, pipeline, listen, claimTimeout, notify and direct topics`, () => {
      const db = open()
      const outbox = (create as typeof createBetterSqliteOutbox)({ topics, kafka })
      const connection = db as never
      relays.push(outbox.relay({ connection, pipeline: false, busyTimeout: 5 }))
      refused(
        () => outbox.relay({ connection, mode: 'concurrent' }),
        /mode 'concurrent' is not available on SQLite/,
      )
      refused(() => outbox.relay({ connection, pipeline: true }), /'pipeline' is not available on SQLite/)
      refused(
        () => outbox.relay({ connection, listen: true } as never),
        /'listen' is not available on SQLite/,
      )
      refused(
        () => outbox.relay({ connection, claimTimeout: 5000 } as never),
        /'claimTimeout' does not apply to SQLite/,
      )
      refused(() => create({ topics, notify: true } as never), /'notify' is not available on SQLite/)
      refused(() => create({ topics: direct }), /outbox: false/, /SQLite/)
      db.close()
    })
  }

  it('PGlite refuses other modes, pipeline and the options of a connected relay', async () => {
    const db = await PGlite.create()
    try {
      const outbox = createPgliteOutbox({ db, topics, kafka })
      relays.push(outbox.relay({ pipeline: false }))
      refused(() => outbox.relay({ pipeline: true }), /'pipeline' is not available on PGlite/)
      refused(
        () => outbox.relay({ mode: 'concurrent' as never }),
        /not available on PGlite/,
        /'single' on PGlite/,
      )
      for (const option of ['connection', 'claimTimeout', 'leaderCheckInterval', 'listen', 'claimSlots']) {
        refused(
          () => outbox.relay({ [option]: 1000 } as never),
          new RegExp(`'${option}' does not apply to PGlite`),
        )
      }
    } finally {
      for (const relay of relays.splice(0)) await relay.stop()
      await db.close()
    }
  })
})
