/**
 * The fence of a pipelined single/exclusive relay, the same on every database that pipelines: a
 * new leader waits until every session of the old leader is gone, since the old leader's companion
 * may still hold (and send) rows of a later batch.
 */
import assert from 'node:assert/strict'
import type { RelayStore } from '../../src/core/seams.ts'

type PipelinedStore = RelayStore & { companion(): RelayStore }

/**
 * `store()` opens a relay store of an exclusive relay on an outbox holding `total` rows (at least
 * 20), none claimed.
 */
export async function assertLeaderWaitsAtFence(store: () => PipelinedStore, total: number): Promise<void> {
  const oldLeader = store()
  const oldCompanion = oldLeader.companion()
  const candidate = store()
  try {
    await oldLeader.connect()
    await oldCompanion.connect()
    await candidate.connect()
    assert.equal(await oldLeader.tryAcquireLeadership(), true)
    const first = await oldLeader.claim(10)
    const ahead = await oldCompanion.claim(10)
    assert.equal(first.length, 10)
    assert.equal(ahead.length, 10, 'the companion claimed the next batch, skipping the leader rows')
    assert.ok(Number(ahead[0]?.id) > Number(first.at(-1)?.id))
    assert.equal(await candidate.tryAcquireLeadership(), false, 'the leader lock is held')

    // The leader session ends; its companion still holds rows of the next batch.
    await oldLeader.close()
    assert.equal(
      await candidate.tryAcquireLeadership(),
      false,
      'no leader while the old companion lives: its rows would be overtaken',
    )
    assert.equal(candidate.heldBy, 'leader', 'held by the former leader, not by concurrent relays')
    await oldCompanion.close()
    assert.equal(await candidate.tryAcquireLeadership(), true, 'leader once the old relay is gone')
    const taken = await candidate.claim(100)
    assert.equal(Number(taken[0]?.id), Number(first[0]?.id), 'the new leader starts at the oldest row')
    assert.equal(taken.length, total)
    await candidate.abandon()

    // A companion whose primary's session died before the relay noticed must not claim.
    const stale = oldLeader.companion()
    await stale.connect()
    try {
      assert.deepEqual(await stale.claim(10), [], 'a companion of a deposed leader claims nothing')
      assert.equal(await candidate.tryAcquireLeadership(), true, 'and leaves the fence to the leader')
    } finally {
      await stale.close()
    }
  } finally {
    await oldLeader.close()
    await oldCompanion.close()
    await candidate.close()
  }
}
