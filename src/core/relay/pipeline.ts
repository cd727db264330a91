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
  /** Deletion of batches Kafka acknowledged, still running; settled before the next claim on its session. */
  #acking: Promise<void> | undefined
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
      await this.settleAcks()
      const claiming = performance.now()
      const claimed = await this.#store.claim(limits.messages, limits.bytes)
      current = { store: this.#store, messages: claimed, claimMs: performance.now() - claiming }
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
      if (this.#acking !== undefined) {
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
      if (this.#acking !== undefined || this.#deferredAck !== undefined) await this.settleAcks()
    } catch (error) {
      return { error }
    }
    try {
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
    this.#acking = this.#acking ? Promise.all([this.#acking, acking]).then(() => {}) : acking
    // Observed by the next settleAcks; until then it must not count as unhandled.
    this.#acking.catch(() => {})
  }

  #delivered(acknowledged: DeferredAck): void {
    this.#delivery.deliveredCount(acknowledged.ids.length, acknowledged.topics, acknowledged.timing)
  }

  #startDeferredAck(): void {
    const deferred = this.#deferredAck
    this.#deferredAck = undefined
    if (deferred) this.#startAck(deferred)
  }

  /** Waits for the deletes in flight (starting a deferred one); rethrows their failure. */
  async settleAcks(): Promise<void> {
    this.#startDeferredAck()
    const acking = this.#acking
    this.#acking = undefined
    if (acking) await acking
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
    if (this.companion.healthy && (!this.#store.healthy || !this.#isLeader())) {
      await this.companion.close().catch(() => {})
    }
  }
}
