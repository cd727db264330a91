// Concurrent relays whose claims lock slots of the key's hash (relay option `claimSlots`) instead
// of one lock per key: per-key order across relays (read back from Kafka and checked), claims that
// never split a slot, and the join fence that keeps relays of the two kinds (or of two slot
// counts) from running together.
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import pg from 'pg'
import { PostgresRelayStore } from '../src/dialects/postgres/index.ts'
import { lockClass } from '../src/dialects/postgres/names.ts'
import { ErrorCodes } from '../src/index.ts'
import { DATABASE_URL, relaySessionOpener, withClient } from './support/env.ts'
import { assertRelaysShareWorkload } from './support/shared-drain.ts'
import { dropOrderSchemas, orderOutbox, runOrderWorkload } from './support/workload.ts'

const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 8 })

const openSession = relaySessionOpener('k-entity-slots-test')

function concurrentStore(schema: string, claimSlots?: number): PostgresRelayStore {
  return new PostgresRelayStore({
    table: { schema, table: 'outbox' },
    connect: openSession,
    claimTimeout: 30_000,
    sessionIdleTimeout: 0,
    concurrent: true,
    claimSlots,
    listen: false,
    exclusive: false,
  })
}

async function opened(schema: string, claimSlots?: number): Promise<PostgresRelayStore> {
  const store = concurrentStore(schema, claimSlots)
  await store.connect()
  return store
}

describe('concurrent claims locking slots (claimSlots)', () => {
  after(async () => {
    await pool.end()
    await dropOrderSchemas()
  })

  it('four relays with claimSlots: 16 share 12,000 messages over 2,000 keys without breaking per-key order', async (t) => {
    await assertRelaysShareWorkload(t, {
      prefix: 'ke_slots',
      relays: 4,
      relayOptions: { claimSlots: 16 },
      pool,
      workload: {
        transactions: 400,
        messagesPerTransaction: 30,
        writers: 4,
        keysPerWriter: 500,
        rollbackRate: 0.1,
      },
    })
  })

  it('two claims never hold rows of the same slot, and a claim takes at most one lock per slot', async () => {
    const { schema, outbox, ordersTable } = await orderOutbox(1, 'ke_slotclaim')
    await runOrderWorkload({
      pool,
      outbox,
      ordersTable,
      transactions: 20,
      messagesPerTransaction: 50,
      writers: 1,
      keysPerWriter: 1000,
      rollbackRate: 0,
    })
    const first = await opened(schema, 8)
    const second = await opened(schema, 8)
    try {
      assert.equal(await first.tryAcquireLeadership(), true)
      assert.equal(await second.tryAcquireLeadership(), true)
      const a = await first.claim(300)
      const b = await second.claim(300)
      assert.ok(a.length > 0 && b.length > 0, `both claimed: ${a.length}, ${b.length}`)
      const slotOf = (hash: number | null | undefined) => (hash ?? -1) & 7
      const hashes = await withClient(async (client) => {
        const ids = [...a, ...b].map((m) => m.id)
        const rows = await client.query(
          `SELECT id::text, ordering_hash FROM "${schema}".outbox WHERE id = ANY($1::bigint[])`,
          [ids],
        )
        return new Map(rows.rows.map((row) => [row.id as string, row.ordering_hash as number]))
      })
      const slotsOfA = new Set(a.map((m) => slotOf(hashes.get(m.id))))
      const slotsOfB = new Set(b.map((m) => slotOf(hashes.get(m.id))))
      assert.deepEqual(
        [...slotsOfA].filter((slot) => slotsOfB.has(slot)),
        [],
        'no slot on both relays',
      )
      const held = await withClient(async (client) => {
        const locks = await client.query(
          `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid::text::bigint = $1 AND objsubid = 2`,
          [lockClass({ schema, table: 'outbox' }, 'claim-slot') >>> 0],
        )
        return locks.rows[0].n as number
      })
      assert.ok(held <= 8, `at most 8 slot locks held, got ${held}`)
      await first.abandon()
      await second.abandon()
    } finally {
      await first.close()
      await second.close()
    }
  })

  it('relays locking keys, slots of one count and slots of another never run together', async () => {
    const { schema } = await orderOutbox(1, 'ke_slotjoin')
    const keys = await opened(schema)
    const slots16 = await opened(schema, 16)
    const slots32 = await opened(schema, 32)
    const another16 = await opened(schema, 16)
    const moreKeys = await opened(schema)
    try {
      assert.equal(await keys.tryAcquireLeadership(), true)
      assert.equal(await slots16.tryAcquireLeadership(), false, 'slots wait while a relay locks keys')
      assert.equal(slots16.heldBy, 'claim-locks')
      assert.equal(await moreKeys.tryAcquireLeadership(), true, 'relays locking keys share the outbox')
      await keys.close()
      await moreKeys.close()
      assert.equal(await slots16.tryAcquireLeadership(), true, 'slots join once no relay locks keys')
      assert.equal(await another16.tryAcquireLeadership(), true, 'relays with the same slot count share it')
      assert.equal(await slots32.tryAcquireLeadership(), false, 'another slot count waits')
      assert.equal(slots32.heldBy, 'claim-locks')
      const late = await opened(schema)
      try {
        assert.equal(await late.tryAcquireLeadership(), false, 'a relay locking keys waits while slots run')
        assert.equal(late.heldBy, 'claim-locks')
      } finally {
        await late.close()
      }
      // A relay that backed off left no lock behind: the leader lock's entries are those of the
      // two relays with 16 slots (both entries on each session).
      const entries = await withClient(async (client) => {
        const rows = await client.query(
          `SELECT objid::text::bigint AS objid, count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid::text::bigint = $1 AND objsubid = 2 GROUP BY 1 ORDER BY 1`,
          [lockClass({ schema, table: 'outbox' }, 'leader') >>> 0],
        )
        return rows.rows.map((row) => [Number(row.objid), row.n as number])
      })
      assert.deepEqual(entries, [
        [0, 2],
        [16, 2],
      ])
    } finally {
      for (const store of [keys, slots16, slots32, another16, moreKeys]) await store.close()
    }
  })

  it('relays with the same slot count joining at the same moment all join', async () => {
    const { schema } = await orderOutbox(1, 'ke_slotrace')
    for (let round = 0; round < 10; round++) {
      const stores = await Promise.all(Array.from({ length: 6 }, () => opened(schema, 16)))
      try {
        const joined = await Promise.all(stores.map((store) => store.tryAcquireLeadership()))
        assert.deepEqual(joined, [true, true, true, true, true, true], `round ${round + 1}`)
      } finally {
        for (const store of stores) await store.close()
      }
    }
  })

  it('refuses claimSlots that is not a power of two from 2 to 1024, or outside concurrent mode', async () => {
    const { outbox } = await orderOutbox(1, 'ke_slotargs')
    for (const claimSlots of [0, 1, 3, 2048, 1.5, '64']) {
      assert.throws(
        () =>
          outbox.relay({ connection: DATABASE_URL, mode: 'concurrent', claimSlots: claimSlots as number }),
        (error: unknown) => {
          assert.equal((error as { code?: unknown }).code, ErrorCodes.INVALID_ARGUMENT)
          assert.match(String(error), /claimSlots/)
          return true
        },
      )
    }
    assert.throws(
      () => outbox.relay({ connection: DATABASE_URL, mode: 'exclusive', claimSlots: 64 }),
      /applies to mode 'concurrent' only/,
    )
  })
})
