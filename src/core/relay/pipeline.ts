import { internalCause } from '../errors.ts'
import type { StoredMessage } from '../record.ts'
import type { RelayStore } from '../seams.ts'
import { type BatchLimits, type BatchResult, FullBatch } from './batch-size.ts'
import type { BatchTiming, Delivery } from './delivery.ts'
import { partialBatch, recoverBatch } from './isolation.ts'
import { RelayStageError, type SendOutcome } from './outcomes.ts'

interface ClaimedBatch {
  store: RelayStore
  messages: StoredMessage[]
  claimMs: number
}

interface DeferredAck {
  store: RelayStore
  /** Ids, not messages: the batch's payloads must not outlive its send (see `maxBytesPerPoll`). */
  ids: string[]
  topics: Readonly<Record<string, number>>
  /** Its steps' times, for the `delivered` event; `deleteMs` is filled when the delete is done. */
  timing: BatchTiming
}

/**
 * After the companion failed to connect for a short batch's claim (see `Pipeline.#freeSession`),
 * how long short batches stay on the first session before trying it again, in ms.
 */
const COMPANION_RETRY_MS = 5000

/** A claim ahead's result; it never rejects (see `Pipeline.#claimAhead`). */
interface ClaimAhead {
  messages?: StoredMessage[]
  claimMs?: number
  error?: unknown
}

/**
 * The pipelined relay (see `RelayOptions.pipeline`). Two sessions take turns: while Kafka has
 * batch N, the other session (once its delete of batch N-1 is done) claims batch N+1, skipping
 * N's rows; batch N+1 is sent only after Kafka acknowledged N, and released untouched if it did
 * not, so per-key order is the same as one batch at a time. N's delete runs while N+1 is sent.
 * Only a full batch (by count or bytes, see `FullBatch`) claims ahead: a short one means the
 * outbox is (nearly) drained. The batch ahead has the same byte budget, so the relay holds at
 * most two batches' worth of rows.
 *
 * A short batch's delete does not hold up the next claim either: that claim runs on the session
 * whose delete is not in flight (see `#freeSession`), after the batch before it was acknowledged,
 * as any claim after a short batch is. Its session leaves out the rows being deleted until their
 * delete returns, as a claim ahead does, so order and the two-batch bound are those of the claim
 * ahead. At 1,000 msg/s the delete (1-3 ms) was on the path from every commit to its ack.
 */
export class Pipeline {
  readonly #store: RelayStore
  /** The store's second session. */
  readonly companion: RelayStore
  readonly #delivery: Delivery
  readonly #limits: BatchLimits
  readonly #fullBatch: FullBatch
  readonly #isLeader: () => boolean
  /** A batch claimed ahead, to be sent once the batch before it was acknowledged by Kafka. */
  #ahead: ClaimedBatch | undefined
  /** Deletion of batches Kafka acknowledged, still running, per session; settled before the next claim on it. */
  readonly #acking = new Map<RelayStore, Promise<void>>()
  /** Until when short batches do not try the companion again (see `COMPANION_RETRY_MS`). */
  #companionDownUntil = Number.NEGATIVE_INFINITY
  /** The companion's connect started for short batches, in the background (see `#freeSession`). */
  #companionConnecting: Promise<void> | undefined
  /**
   * An acknowledged batch whose delete waits to go with the next claim on its session, in the
   * same round trip (`RelayStore.completeAndClaim`); `settleAcks` runs it alone if no claim comes.
   */
  #deferredAck: DeferredAck | undefined
  /**
   * The last batch was claimed ahead, while the other session still held keys and rows: short
   * or not, it says nothing about how much is left, so the loop claims again without pausing.
   */
  sentAhead = false

  constructor(
    store: RelayStore,
    companion: RelayStore,
    delivery: Delivery,
    limits: BatchLimits,
    isLeader: () => boolean,
  ) {
    this.#store = store
    this.companion = companion
    this.#delivery = delivery
    this.#limits = limits
    this.#fullBatch = new FullBatch(limits)
    this.#isLeader = isLeader
  }

  /** One batch of the pipelined loop: the number of messages dealt with, and whether it was full. */
  async relay(): Promise<BatchResult> {
    const limits = this.#limits
    const started = performance.now()
    let current = this.#ahead
    this.#ahead = undefined
    // Claimed ahead on a session that failed since (a query timed out, the server ended it): its
    // rows went back to the outbox, perhaps to a new leader, so this relay must not send them.
    if (current !== undefined && !current.store.healthy) current = undefined
    this.sentAhead = current !== undefined
    if (current === undefined) {
      const session = await this.#freeSession()
      const claiming = performance.now()
      const claimed = await session.claim(limits.messages, limits.bytes)
      current = { store: session, messages: claimed, claimMs: performance.now() - claiming }
    }
    if (current.messages.length === 0) return { count: 0, full: false }
    const { store, messages } = current
    const timing: BatchTiming = { started, claimMs: current.claimMs, sendMs: 0, deleteMs: 0 }
    const full = this.#fullBatch.test(messages)
    const next = store === this.#store ? this.companion : this.#store
    let acknowledging = false
    // The claim ahead first: its query is on its way before the send encodes this batch.
    const claimingAhead = full ? this.#claimAhead(next, limits) : undefined
    // The batch ahead may hold later messages of a key that just failed: released untouched.
    const releaseAhead = async (): Promise<ClaimAhead | undefined> => {
      const ahead = await claimingAhead
      if (ahead?.messages) await next.abandon().catch(() => {})
      return ahead
    }
    try {
      if (claimingAhead === undefined) this.#startDeferredAck()
      let outcome: SendOutcome
      const sending = performance.now()
      try {
        outcome = await this.#delivery.send(messages, true)
      } catch (error) {
        await releaseAhead()
        throw error
      }
      if ('rejected' in outcome || outcome.failed.length > 0) {
        const ahead = await releaseAhead()
        if (ahead?.error) throw ahead.error
        const count =
          'rejected' in outcome
            ? await recoverBatch(this.#delivery, store, messages, outcome.rejected, timing, sending)
            : await partialBatch(this.#delivery, store, messages, outcome.failed, timing, sending)
        return { count, full }
      }
      timing.sendMs = performance.now() - sending
      this.#delivery.lastSendOk = this.#delivery.now()
      this.#delivery.batchFailures = 0
      acknowledging = true
      const acknowledged: DeferredAck = {
        store,
        ids: messages.map((m) => m.id),
        topics: this.#delivery.topicsOf(messages),
        timing,
      }
      // A full batch: the next claim ahead runs on this session as soon as the next batch is
      // sent, so the delete can ride along with it; otherwise it runs now.
      if (claimingAhead !== undefined && store.completeAndClaim !== undefined)
        this.#deferredAck = acknowledged
      else this.#startAck(acknowledged)
      const ahead = await claimingAhead
      if (ahead?.error) throw ahead.error
      if (ahead?.messages && ahead.messages.length > 0)
        this.#ahead = { store: next, messages: ahead.messages, claimMs: ahead.claimMs ?? 0 }
    } catch (error) {
      if (!acknowledging) await store.abandon().catch(() => {})
      throw error
    }
    return { count: messages.length, full }
  }

  /** Never rejects: a failed earlier delete comes back as `error`; trouble with the session just means no claim ahead. */
  async #claimAhead(store: RelayStore, limits: BatchLimits): Promise<ClaimAhead> {
    const deferred = this.#deferredAck
    if (deferred?.store === store && store.completeAndClaim !== undefined && store.healthy) {
      this.#deferredAck = undefined
      // Taken before any await: the batch this claim runs beside may settle early meanwhile, and
      // its late acknowledgements are of rows its own session still holds locked until it writes
      // the hold. Deleted here, they would make this session wait for that one, which waits for
      // this claim (until the query timeout).
      const late = this.#delivery.lateDelete(false)
      // Without an await here the query leaves before the caller's send encodes its batch, so
      // PostgreSQL works on the claim meanwhile.
      if (this.#acking.size > 0) {
        try {
          await this.settleAcks()
        } catch (error) {
          late.done(false)
          this.#startAck(deferred)
          return { error }
        }
      }
      const ids = late.ids.length > 0 ? [...deferred.ids, ...late.ids] : deferred.ids
      try {
        const started = performance.now()
        const messages = await store.completeAndClaim(ids, limits.messages, limits.bytes)
        late.done(true)
        // One round trip did both: each step reports it.
        const roundTrip = performance.now() - started
        deferred.timing.deleteMs = roundTrip
        this.#delivered(deferred)
        return { messages, claimMs: roundTrip }
      } catch (error) {
        late.done(false)
        // Whether the delete committed before the failure is unknown: the rows are either gone
        // or back in the outbox (sent again later), never lost. Treated as a failed delete.
        await store.close().catch(() => {})
        return { error: new RelayStageError('acknowledge', error) }
      }
    }
    try {
      if (this.#acking.size > 0 || this.#deferredAck !== undefined) await this.settleAcks()
    } catch (error) {
      return { error }
    }
    try {
      if (store === this.companion) await this.#companionConnecting
      if (!store.healthy) await store.connect()
      const started = performance.now()
      const messages = await store.claim(limits.messages, limits.bytes)
      return { messages, claimMs: performance.now() - started }
    } catch (error) {
      await store.close().catch(() => {})
      // A bug is no trouble with the session: it stops the relay instead of being skipped.
      return internalCause(error) === undefined ? {} : { error }
    }
  }

  /** Starts deleting an acknowledged batch on its session; it is reported delivered once the rows are gone. */
  #startAck(acknowledged: DeferredAck): void {
    const started = performance.now()
    const acking = this.#delivery.acknowledge(acknowledged.store, acknowledged.ids).then(() => {
      acknowledged.timing.deleteMs = performance.now() - started
      this.#delivered(acknowledged)
    })
    const earlier = this.#acking.get(acknowledged.store)
    const all = earlier ? Promise.all([earlier, acking]).then(() => {}) : acking
    this.#acking.set(acknowledged.store, all)
    // A failed delete stays until settleAcks rethrows it; the session counts as busy meanwhile.
    all.then(
      () => {
        if (this.#acking.get(acknowledged.store) === all) this.#acking.delete(acknowledged.store)
      },
      () => {},
    )
  }

  /**
   * The session for a claim that is not a claim ahead: one with no delete in flight (or failed
   * and not yet reported) and none deferred, the first session preferred, so the claim need not
   * wait. When both are busy, the first delete to finish frees its session; a failed one is
   * rethrown (after every delete settled). Without a usable companion, the first session only.
   */
  async #freeSession(): Promise<RelayStore> {
    const companion = this.companion
    // A delete deferred to ride with a claim ahead gets none now: it runs on its own, or its
    // session's claim stays open (and its rows in the outbox) for as long as claims come back empty.
    this.#startDeferredAck()
    for (;;) {
      const idle = (store: RelayStore) => !this.#acking.has(store) && this.#deferredAck?.store !== store
      if (idle(this.#store)) return this.#store
      if (performance.now() < this.#companionDownUntil) break
      if (idle(companion)) {
        if (companion.healthy && this.#companionConnecting === undefined) return companion
        // Connected in the background, not on the way from a commit to its ack: a new session
        // (and, exclusive, its fence) took 50 ms under load, the p99 of a 5 s run.
        this.#connectCompanion()
      }
      this.#startDeferredAck()
      if (this.#acking.size === 0) continue
      const failed = await Promise.race(
        [...this.#acking.values()].map((acking) =>
          acking.then(
            () => false,
            () => true,
          ),
        ),
      )
      if (failed) break
    }
    await this.settleAcks()
    return this.#store
  }

  #delivered(acknowledged: DeferredAck): void {
    this.#delivery.deliveredCount(acknowledged.ids.length, acknowledged.topics, acknowledged.timing)
  }

  #startDeferredAck(): void {
    const deferred = this.#deferredAck
    this.#deferredAck = undefined
    if (deferred) this.#startAck(deferred)
  }

  #connectCompanion(): void {
    const companion = this.companion
    if (this.#companionConnecting !== undefined || companion.healthy) return
    const connecting = companion.connect().then(
      () => {},
      async () => {
        // No companion for now (e.g. the server is out of connections): the first session only.
        await companion.close().catch(() => {})
        this.#companionDownUntil = performance.now() + COMPANION_RETRY_MS
      },
    )
    this.#companionConnecting = connecting
    void connecting.finally(() => {
      if (this.#companionConnecting === connecting) this.#companionConnecting = undefined
    })
  }

  /** Closes the companion session, after a connect still on its way. */
  async closeCompanion(): Promise<void> {
    await this.#companionConnecting
    await this.companion.close().catch(() => {})
  }

  /** Waits for the deletes in flight (starting a deferred one); rethrows their failure. */
  async settleAcks(): Promise<void> {
    this.#startDeferredAck()
    const acking = [...this.#acking.values()]
    this.#acking.clear()
    const failed = (await Promise.allSettled(acking)).find((result) => result.status === 'rejected')
    if (failed !== undefined) throw failed.reason
  }

  /**
   * Leaves nothing of the pipeline behind: deletes in flight finish, a batch claimed ahead is
   * released, and when the leader session is gone its companion goes too, so a new leader is not
   * kept waiting at the fence.
   */
  async settle(): Promise<void> {
    await this.settleAcks().catch(() => {})
    const ahead = this.#ahead
    this.#ahead = undefined
    if (ahead) await ahead.store.abandon().catch(() => {})
    await this.#companionConnecting
    if (this.companion.healthy && (!this.#store.healthy || !this.#isLeader())) {
      await this.companion.close().catch(() => {})
    }
  }
}
