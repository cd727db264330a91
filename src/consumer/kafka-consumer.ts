import { Consumer, type GroupAssignment, type MessagesStream } from '@platformatic/kafka'
import { backoffDelay } from '../core/backoff.ts'
import { ErrorCodes, isKEntityError, KEntityError } from '../core/errors.ts'
import type { Topic } from '../core/topic.ts'
import { waitOrAbort } from '../core/wait.ts'
import { type KafkaOptions, kafkaClientBase, type ResolvedKafkaOptions } from '../transports/kafka/index.ts'
import { BatchHandlerError, type BatchSteps, handleInParts } from './failed-batch.ts'
import { type ConsumedMessage, partitionKey, type RawRecord, toMessage } from './message.ts'
import type { DeadMessage, ResolvedConsumerOptions } from './options.ts'
import { RecordQueue, recordBytes } from './record-queue.ts'

/**
 * What the consumer does with each message. `handle` throws to have the message retried; it
 * resolves `false` when the message was not handled and must not be committed (the consumer is
 * closing), `'duplicate'` when it was handled before (skipped). `deadLetter` records a message given up on; it is retried until it succeeds.
 */
export interface MessageProcessor<T> {
  handle(message: ConsumedMessage<T>): Promise<unknown>
  deadLetter(dead: DeadMessage<T>): Promise<void>
  /** False for failures that are nobody's message's fault (the database is down): retried without end. */
  countsAsAttempt?(error: unknown): boolean
  /**
   * Handles several records of one partition at once (one transaction), all or none; throwing
   * (a failure, a record seen before) makes the consumer narrow the failure down in smaller
   * batches and alone (see `handleInParts`). A `BatchHandlerError` says which message's handler
   * failed.
   */
  handleBatch?(messages: ConsumedMessage<T>[]): Promise<void>
  /** Most records per `handleBatch` call (default 1: no batches). */
  readonly batchSize?: number
  /** Called once the consumer has stopped. */
  close?(): Promise<void>
}

/** What a consumer has done since it started. */
export interface ConsumerCounts {
  /** Messages handled (their effects committed). */
  handled: number
  /** Handler failures that were retried. */
  retried: number
  deadLettered: number
  /** Redelivered messages the inbox recognised and skipped. */
  duplicates: number
  /** Records the `filter` option skipped (committed without calling the handler). */
  filtered: number
  /**
   * Times the consumer dropped its Kafka client and joined its group again: its fetch stream
   * failed (a broker restart), or a rebalanced partition resumed past its committed offset.
   */
  reconnects: number
  /**
   * Transactions that handled messages of one partition together (the inbox's `batchSize`).
   * A batch that failed is not counted: its messages were then handled in smaller batches and
   * alone (see `handleInParts`).
   */
  batches: number
}

const FETCH_BYTES_PER_PARTITION = 64 * 1024
/** How long close() waits for offset commits in flight. */
const COMMIT_WAIT_MS = 5000

interface PartitionState {
  key: string
  queue: RecordQueue
  running: boolean
  /** Highest offset queued: after a rejoin the client fetches from the committed offset again. */
  lastSeen: bigint
  revoked: boolean
  /** Cuts a retry's wait short when the partition is taken away. */
  readonly revoke: AbortController
  /** The partition's worker while it runs: the next owner's worker waits for it. */
  worker: Promise<void> | undefined
}

/**
 * A consumer group member reading one typed topic: records go to one FIFO per partition, each
 * drained by its own worker, so order holds per partition while partitions proceed in parallel
 * and a message being retried holds up only its own partition. An offset is committed only after
 * its message was handled (or dead-lettered), so a crash redelivers instead of losing.
 */
export class KafkaConsumer<T> implements AsyncIterable<ConsumedMessage<T>> {
  readonly topic: Topic<T>
  readonly groupId: string
  readonly counts: ConsumerCounts = {
    handled: 0,
    retried: 0,
    deadLettered: 0,
    duplicates: 0,
    filtered: 0,
    reconnects: 0,
    batches: 0,
  }
  readonly #options: ResolvedConsumerOptions
  readonly #kafka: KafkaOptions | ResolvedKafkaOptions
  #processor: MessageProcessor<T> | undefined
  #consumer: Consumer<Buffer, Buffer, Buffer, Buffer> | undefined
  #stream: MessagesStream<Buffer, Buffer, Buffer, Buffer> | undefined
  readonly #partitions = new Map<string, PartitionState>()
  readonly #workers = new Set<Promise<void>>()
  readonly #commits = new Set<Promise<void>>()
  /** With `commitIntervalMs`: the last record done per partition, not committed yet. */
  readonly #uncommitted = new Map<string, RawRecord>()
  /** Per owned partition: the last record whose offset was sent for commit (see `#recommit`). */
  readonly #lastCommitted = new Map<string, RawRecord>()
  #commitTimer: NodeJS.Timeout | undefined
  readonly #abort = new AbortController()
  /** Records fetched and not done yet (queued or in hand), and their bytes: see `maxInFlight`. */
  #buffered = 0
  #bufferedBytes = 0
  #paused = false
  #closing = false
  #closed: Promise<void> | undefined
  #started: Promise<void> | undefined
  /** While a failed stream is being replaced (see `#reopen`). */
  #reopening: Promise<void> | undefined
  /** Partitions of the latest assignment. */
  #owned = new Set<string>()
  /**
   * A rebalance happened and the client has not restored the committed offsets yet: records that
   * arrive now come from fetches sent before it (see `#onRecord`).
   */
  #restoring = false
  /** Per newly assigned partition: the committed offset its first record must start from. */
  readonly #anchors = new Map<string, bigint>()
  /** Per partition: the lowest offset dropped while `#restoring` (see `#onOffsetsRestored`). */
  readonly #dropped = new Map<string, bigint>()
  /** Per partition: the anchor at which a gap already made the consumer reconnect once. */
  readonly #gapAt = new Map<string, bigint>()
  /** Workers of partitions taken away, until they finish the message in hand. */
  readonly #retiring = new Map<string, Promise<void>>()
  /** Iterator form: messages handed to the loop, each with what to call when the loop moves on. */
  readonly #deliveries: Array<{ message: ConsumedMessage<T>; settle: (done: boolean) => void }> = []
  #reader: (() => void) | undefined
  #current: ((done: boolean) => void) | undefined

  constructor(
    topic: Topic<T>,
    kafka: KafkaOptions | ResolvedKafkaOptions,
    options: ResolvedConsumerOptions,
    processor?: MessageProcessor<T>,
  ) {
    this.topic = topic
    this.groupId = options.groupId
    this.#kafka = kafka
    this.#options = options
    this.#processor = processor
  }

  /**
   * Records fetched and not done yet (queued, or in a handler's hands) and their bytes: what
   * `maxInFlight` and `maxInFlightBytes` bound.
   */
  get inFlight(): { records: number; bytes: number } {
    return { records: this.#buffered, bytes: this.#bufferedBytes }
  }

  /**
   * Joins the group and starts fetching; resolves once the stream is open, or once the consumer
   * is closed (idempotent). Kafka may be away when the consumer starts: it keeps trying, with
   * backoff, as it does after a failed stream (see `#reopen`).
   */
  start(): Promise<void> {
    this.#started ??= this.#openUntilJoined(false)
    return this.#started
  }

  /** Opens a client and its stream, with backoff until it succeeds or the consumer closes. */
  async #openUntilJoined(reconnecting: boolean): Promise<void> {
    for (let attempt = 1; !this.#closing; attempt++) {
      try {
        await this.#open()
        if (reconnecting) this.counts.reconnects++
        if (reconnecting || attempt > 1) {
          this.#options.logger.warn?.(
            { topic: this.topic.name, groupId: this.groupId, attempt },
            reconnecting ? 'the Kafka consumer reconnected' : 'the consumer joined its group',
          )
        }
        return
      } catch (error) {
        this.#options.logger.error(
          { topic: this.topic.name, groupId: this.groupId, attempt, error: String(error) },
          'the consumer could not join its group; retrying',
        )
        await this.#consumer?.close(true).catch(() => {})
        await waitOrAbort(backoffDelay(attempt, { initial: 500, max: 10_000 }), this.#abort.signal)
      }
    }
  }

  async #open(): Promise<void> {
    const options = this.#options
    const session = options.sessionTimeoutMs
    const consumer = new Consumer({
      ...kafkaClientBase(this.#kafka),
      groupId: options.groupId,
      autocommit: false,
      maxWaitTime: options.maxWaitMs,
      sessionTimeout: session,
      rebalanceTimeout: session,
      heartbeatInterval: Math.min(3000, Math.floor(session / 3)),
      ...(options.groupInstanceId === undefined ? {} : { groupInstanceId: options.groupInstanceId }),
    })
    this.#consumer = consumer
    this.#stream = undefined
    // The client emits 'error' when its own rejoin fails (the coordinator moved or is away during
    // a broker outage): unhandled, that event ends the process. Once joined, recover as from a
    // failed stream; before that, the join's own rejection is retried by #openUntilJoined.
    consumer.on('error', (error: unknown) => {
      if (this.#consumer !== consumer) return
      options.logger.error(
        { topic: this.topic.name, groupId: this.groupId, error: String(error) },
        'the Kafka consumer failed; reconnecting',
      )
      if (this.#stream === undefined || this.#closing) return
      this.#reopening ??= this.#reopen().finally(() => {
        this.#reopening = undefined
      })
    })
    consumer.on('consumer:group:join', (payload: { assignments?: GroupAssignment[] }) => {
      if (this.#consumer !== consumer) return
      // The first join of a client comes before its stream exists: nothing was fetched before it.
      if (this.#stream !== undefined) this.#restoring = true
      this.#onAssignment(payload.assignments ?? [])
      this.#recommit()
    })
    const stream = await consumer.consume({
      topics: [this.topic.name],
      mode: 'committed',
      fallbackMode: options.from,
      autocommit: false,
      maxWaitTime: options.maxWaitMs,
      // Small per-partition fetches interleave the partitions in the stream: with 1 MB each, the
      // in-flight bound filled with one partition's records and the other workers sat idle.
      maxBytesPerPartition: FETCH_BYTES_PER_PARTITION,
    })
    this.#stream = stream
    stream.on('data', (raw: RawRecord) => {
      if (this.#stream === stream) this.#onRecord(raw)
    })
    stream.on('offsets', () => {
      if (this.#stream === stream) this.#onOffsetsRestored(stream.offsetsToFetch)
    })
    stream.on('error', (error: unknown) => {
      options.logger.error(
        { topic: this.topic.name, groupId: this.groupId, error: String(error) },
        'the Kafka consumer stream failed; reconnecting',
      )
      this.#reopening ??= this.#reopen().finally(() => {
        this.#reopening = undefined
      })
    })
    if (this.#closing) await stream.close().catch(() => {})
  }

  /**
   * A failed stream does not recover by itself (after a broker restart its fetches keep failing
   * on a stale leader epoch and it stops), so the consumer would sit idle for good: drop it,
   * give back every partition as a rebalance would, and join again with a fresh client until
   * that succeeds. Records handled but not committed yet are delivered again, which the inbox
   * (or the handler's idempotence) absorbs.
   */
  async #reopen(): Promise<void> {
    // close() is stopping this stream anyway.
    if (this.#closing) return
    const stream = this.#stream
    const consumer = this.#consumer
    // Records the old stream still delivers belong to nobody now.
    this.#stream = undefined
    this.#restoring = false
    this.#dropped.clear()
    this.#onAssignment([])
    // The old workers finish the message in hand first, so two never run on one partition.
    while (this.#workers.size > 0) await Promise.allSettled([...this.#workers])
    await stream?.close().catch(() => {})
    await consumer?.close(true).catch(() => {})
    // A closed stream never settles the commits it still had queued (@platformatic/kafka 2.12):
    // waiting for them would make close() hang.
    this.#commits.clear()
    this.#lastCommitted.clear()
    await this.#openUntilJoined(true)
  }

  /** Partitions taken away from this member: their queued records belong to the next owner now. */
  #onAssignment(assignments: GroupAssignment[]): void {
    const owned = new Set<string>()
    for (const { topic, partitions } of assignments) {
      for (const partition of partitions) owned.add(partitionKey(topic, partition))
    }
    for (const key of owned) {
      if (!this.#owned.has(key)) this.#anchors.delete(key)
    }
    this.#owned = owned
    for (const [key, state] of this.#partitions) {
      if (owned.has(key)) continue
      this.#release(state.queue.clear())
      state.revoked = true
      state.revoke.abort()
      if (state.worker !== undefined) {
        const worker = state.worker
        this.#retiring.set(key, worker)
        worker.finally(() => {
          if (this.#retiring.get(key) === worker) this.#retiring.delete(key)
        })
      }
      this.#uncommitted.delete(key)
      this.#lastCommitted.delete(key)
      this.#partitions.delete(key)
    }
    this.#maybeResume()
  }

  /**
   * After a rebalance the client restores each partition's committed offset, but a fetch it sent
   * before the rebalance may still answer afterwards and move the partition's position past
   * records nobody has handled (@platformatic/kafka 2.12 pushes such a response and keeps
   * fetching from its end). So a partition newly assigned by a rebalance must start exactly at the
   * offset restored here; see `#onRecord`.
   */
  #onOffsetsRestored(offsets: Map<string, bigint>): void {
    if (!this.#restoring) return
    this.#restoring = false
    for (const key of this.#owned) {
      if (this.#partitions.has(key)) continue
      // Without a committed offset the client keeps the position a stale fetch moved: the records
      // dropped meanwhile must still come first.
      const dropped = this.#dropped.get(key)
      const offset = offsets.get(key)
      const anchor = dropped !== undefined && (offset === undefined || dropped < offset) ? dropped : offset
      if (anchor !== undefined && anchor >= 0n) this.#anchors.set(key, anchor)
    }
    this.#dropped.clear()
  }

  /** False for a record that must not start a newly assigned partition (see `#onOffsetsRestored`). */
  #startsInOrder(key: string, raw: RawRecord): boolean {
    // Sent before the rebalance: the client fetches this partition again from its committed offset.
    if (this.#restoring) {
      const dropped = this.#dropped.get(key)
      if (dropped === undefined || raw.offset < dropped) this.#dropped.set(key, raw.offset)
      return false
    }
    const anchor = this.#anchors.get(key)
    if (anchor === undefined) return true
    if (raw.offset < anchor) return false
    if (raw.offset > anchor && this.#gapAt.get(key) !== anchor) {
      // Records between the committed offset and this one were skipped by a stale fetch, or do not
      // exist (compaction, transaction markers). A new client fetches from the committed offset
      // with no older fetch in flight: if it meets the same gap, the gap is real.
      this.#gapAt.set(key, anchor)
      this.#options.logger.warn?.(
        { topic: raw.topic, partition: raw.partition, committed: String(anchor), offset: String(raw.offset) },
        'a rebalanced partition resumed past its committed offset; reconnecting to fetch it again',
      )
      this.#reopening ??= this.#reopen().finally(() => {
        this.#reopening = undefined
      })
      return false
    }
    this.#anchors.delete(key)
    return true
  }

  #onRecord(raw: RawRecord): void {
    if (this.#closing) return
    const key = partitionKey(raw.topic, raw.partition)
    let state = this.#partitions.get(key)
    if (state === undefined) {
      // A fetch sent before a rebalance can answer after it with records of a partition that is
      // another member's now: handling them would apply a later offset before that member applies
      // the earlier ones.
      if (!this.#owned.has(key)) return
      if (!this.#startsInOrder(key, raw)) return
      state = {
        key,
        queue: new RecordQueue(),
        running: false,
        lastSeen: -1n,
        revoked: false,
        revoke: new AbortController(),
        worker: undefined,
      }
      this.#partitions.set(key, state)
    }
    if (raw.offset <= state.lastSeen) return
    state.lastSeen = raw.offset
    state.queue.push(raw)
    this.#buffered++
    this.#bufferedBytes += recordBytes(raw)
    const { maxInFlight, maxInFlightBytes } = this.#options
    if ((this.#buffered >= maxInFlight || this.#bufferedBytes >= maxInFlightBytes) && !this.#paused) {
      this.#paused = true
      this.#stream?.pause()
    }
    if (!state.running) this.#startWorker(state)
  }

  /** Records done (handled, skipped, or given back): their room in the in-flight bounds is free again. */
  #release(raws: readonly RawRecord[]): void {
    this.#buffered -= raws.length
    for (const raw of raws) this.#bufferedBytes -= recordBytes(raw)
    this.#maybeResume()
  }

  #maybeResume(): void {
    const { maxInFlight, maxInFlightBytes } = this.#options
    if (
      this.#paused &&
      !this.#closing &&
      this.#buffered <= maxInFlight / 2 &&
      this.#bufferedBytes <= maxInFlightBytes / 2
    ) {
      this.#paused = false
      this.#stream?.resume()
    }
  }

  #startWorker(state: PartitionState): void {
    state.running = true
    // The partition's previous worker (taken away, still finishing the message in hand) first:
    // two workers on one partition would apply its records out of order.
    const previous = this.#retiring.get(state.key)
    const drain = previous === undefined ? this.#drain(state) : previous.then(() => this.#drain(state))
    const worker = drain
      .catch((error: unknown) => {
        // Not expected (#process settles every failure): the partition stops here, uncommitted,
        // and its records go to the group's next reader.
        this.#options.logger.error(
          { topic: this.topic.name, groupId: this.groupId, error: String(error) },
          'a consumer partition worker failed',
        )
      })
      .finally(() => {
        state.running = false
        state.worker = undefined
        this.#workers.delete(worker)
      })
    state.worker = worker
    this.#workers.add(worker)
  }

  async #drain(state: PartitionState): Promise<void> {
    const processor = this.#processor
    const batchSize = processor?.batchSize ?? 1
    // The stream hands over a fetch's records one by one: wait for the rest of them, or the
    // first record of every burst would be handled alone, in a transaction of its own.
    if (batchSize > 1) await new Promise((resolve) => setImmediate(resolve))
    const steps: BatchSteps<RawRecord> = {
      batch: async (records) => {
        const failure = await this.#processBatch(processor as MessageProcessor<T>, records)
        if (failure === undefined) {
          this.#release(records)
          this.#commit(records[records.length - 1] as RawRecord)
        }
        return failure
      },
      alone: (records) => this.#processEach(state, records),
      stopped: () => this.#closing || state.revoked,
      drop: (records) => this.#release(records),
    }
    while (!this.#closing && !state.revoked) {
      if (batchSize > 1 && processor?.handleBatch !== undefined && state.queue.length > 1) {
        const raws = state.queue.take(batchSize)
        const failure = await steps.batch(raws)
        if (failure !== undefined && !(await handleInParts(raws, failure.at, steps))) return
        continue
      }
      const raw = state.queue.shift()
      if (raw === undefined) return
      if (!(await this.#processEach(state, [raw]))) return
    }
  }

  /** Records one by one; false when closing (or a rebalance) stopped it, leaving the rest uncommitted. */
  async #processEach(state: PartitionState, raws: RawRecord[]): Promise<boolean> {
    for (let i = 0; i < raws.length; i++) {
      if (this.#closing || state.revoked) {
        this.#release(raws.slice(i))
        return false
      }
      const raw = raws[i] as RawRecord
      let done = false
      try {
        done = await this.#process(raw, state)
      } finally {
        this.#release([raw])
      }
      if (!done) {
        this.#release(raws.slice(i + 1))
        return false
      }
      this.#commit(raw)
    }
    return true
  }

  /**
   * The whole batch in one go: undefined if it was handled, else where it failed (`at`: the index
   * in `raws` of the record whose handler failed, when known).
   */
  async #processBatch(
    processor: MessageProcessor<T>,
    raws: RawRecord[],
  ): Promise<{ at: number | undefined } | undefined> {
    const messages: ConsumedMessage<T>[] = []
    /** Per message, its record's index in `raws` (the filter leaves some out). */
    const kept: number[] = []
    const filter = this.#options.filter
    for (let i = 0; i < raws.length; i++) {
      const raw = raws[i] as RawRecord
      try {
        if (filter !== undefined && !filter(raw)) continue
        messages.push(toMessage(this.topic, raw, 1))
      } catch {
        // Unreadable (or its filter threw): alone, it gets its retries and dead letter.
        return { at: i }
      }
      kept.push(i)
    }
    try {
      if (messages.length > 0) await processor.handleBatch?.(messages)
    } catch (error) {
      // Usually a message seen before or a handler's own failure (see handleInParts).
      this.#options.logger.debug?.(
        { topic: this.topic.name, groupId: this.groupId, messages: messages.length, error: String(error) },
        'a batch failed; handling it in parts',
      )
      return { at: error instanceof BatchHandlerError ? kept[error.index] : undefined }
    }
    this.counts.filtered += raws.length - messages.length
    this.counts.handled += messages.length
    if (messages.length > 0) this.counts.batches++
    return undefined
  }

  /** Handles one record with retries, then the dead letter; false if closing cut it short. */
  async #process(raw: RawRecord, state: PartitionState): Promise<boolean> {
    const processor = this.#processor ?? this.#iteratorProcessor
    const { attempts, initialDelayMs, maxDelayMs, logger } = this.#options
    let counted = 0
    for (let attempt = 1; ; attempt++) {
      // Taken away: the next owner handles it, from the committed offset.
      if (this.#closing || state.revoked) return false
      let message: ConsumedMessage<T> | undefined
      let error: unknown
      try {
        if (this.#options.filter?.(raw) === false) {
          this.counts.filtered++
          return true
        }
        message = toMessage(this.topic, raw, attempt)
        const result = await processor.handle(message)
        if (result === false) return false
        if (result === 'duplicate') this.counts.duplicates++
        else this.counts.handled++
        return true
      } catch (caught) {
        error = caught
      }
      // Bytes that cannot be read will not become readable on a retry.
      const unreadable = message === undefined && isKEntityError(error, ErrorCodes.SERIALIZATION_FAILED)
      if (unreadable || processor.countsAsAttempt?.(error) !== false) counted++
      if (unreadable || counted >= attempts) {
        return this.#giveUp(raw, message, error, counted)
      }
      this.counts.retried++
      const delay = backoffDelay(attempt, { initial: initialDelayMs, max: maxDelayMs })
      logger.warn(
        {
          topic: raw.topic,
          partition: raw.partition,
          offset: String(raw.offset),
          attempt,
          retryInMs: delay,
          error: error instanceof Error ? error.message : String(error),
        },
        'a consumer handler failed; retrying',
      )
      await waitOrAbort(delay, AbortSignal.any([this.#abort.signal, state.revoke.signal]))
    }
  }

  async #giveUp(
    raw: RawRecord,
    message: ConsumedMessage<T> | undefined,
    error: unknown,
    attempts: number,
  ): Promise<boolean> {
    const processor = this.#processor ?? this.#iteratorProcessor
    const dead: DeadMessage<T> = {
      message,
      topic: raw.topic,
      partition: raw.partition,
      offset: raw.offset,
      key: raw.key ?? null,
      value: raw.value ?? null,
      error,
      attempts,
    }
    // The dead letter must be recorded before the offset moves past the message.
    for (let attempt = 1; ; attempt++) {
      try {
        await processor.deadLetter(dead)
        this.counts.deadLettered++
        return true
      } catch (failure) {
        if (this.#closing) return false
        this.#options.logger.error(
          { topic: raw.topic, partition: raw.partition, offset: String(raw.offset), error: String(failure) },
          'recording a consumer dead letter failed; retrying',
        )
        await waitOrAbort(backoffDelay(attempt, { initial: 500, max: 30_000 }), this.#abort.signal)
      }
    }
  }

  #commit(raw: RawRecord): void {
    if (this.#options.commitIntervalMs === 0) {
      this.#commitNow(raw)
      return
    }
    // Per partition the last record done stands for every one before it.
    this.#uncommitted.set(partitionKey(raw.topic, raw.partition), raw)
    this.#commitTimer ??= setTimeout(() => {
      this.#commitTimer = undefined
      this.#flushCommits()
    }, this.#options.commitIntervalMs)
  }

  #flushCommits(): void {
    clearTimeout(this.#commitTimer)
    this.#commitTimer = undefined
    for (const raw of this.#uncommitted.values()) this.#commitNow(raw)
    this.#uncommitted.clear()
  }

  /**
   * Waits for the commits in flight, at most `ms`: one the client never answers (its coordinator
   * is gone, or its stream was replaced) must not hold close() up. An offset left uncommitted only
   * means its messages are delivered again, which the inbox (or the handler's idempotence) absorbs.
   */
  async #commitsSettled(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const expired = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), ms)
    })
    try {
      while (this.#commits.size > 0) {
        const settled = Promise.allSettled([...this.#commits]).then(() => false)
        if (await Promise.race([settled, expired])) {
          this.#options.logger.warn?.(
            { topic: this.topic.name, groupId: this.groupId, pending: this.#commits.size, waitedMs: ms },
            'offset commits did not finish while closing; their messages will be delivered again',
          )
          return
        }
      }
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * A commit asked for while the client is rejoining its group is queued, not sent, and with
   * autocommit off @platformatic/kafka 2.12 sends it only with the next commit: a partition that
   * gets no more records would keep its last offsets uncommitted (and redelivered after the next
   * rebalance or restart). Once the group is joined again, asking once more sends the queue.
   */
  #recommit(): void {
    for (const [key, raw] of this.#lastCommitted) {
      if (this.#owned.has(key)) this.#commitNow(raw)
    }
  }

  #commitNow(raw: RawRecord): void {
    this.#lastCommitted.set(partitionKey(raw.topic, raw.partition), raw)
    const commit = Promise.resolve(raw.commit() as Promise<void> | undefined).catch((error: unknown) => {
      // Typically a rebalance took the partition away: its next owner starts from the last
      // committed offset and the inbox (or the handler's idempotence) absorbs the repeat.
      this.#options.logger.debug?.(
        { topic: raw.topic, partition: raw.partition, offset: String(raw.offset), error: String(error) },
        'committing a consumer offset failed',
      )
    })
    this.#commits.add(commit)
    commit.finally(() => this.#commits.delete(commit))
  }

  /**
   * `for await (const message of consumer)`: a message's offset is committed when the loop asks
   * for the next one. Leaving the loop (break, return, throw) closes the consumer without
   * committing the message in hand, which is delivered again to the group's next reader.
   */
  [Symbol.asyncIterator](): AsyncIterator<ConsumedMessage<T>> {
    if (this.#processor !== undefined) {
      throw new KEntityError(
        ErrorCodes.INVALID_ARGUMENT,
        'this consumer was created with a handler; iterate a consumer created without one',
      )
    }
    this.#processor = this.#iteratorProcessor
    return {
      next: async () => {
        this.#current?.(true)
        this.#current = undefined
        await this.start()
        while (!this.#closing) {
          const delivery = this.#deliveries.shift()
          if (delivery !== undefined) {
            this.#current = delivery.settle
            return { value: delivery.message, done: false }
          }
          await new Promise<void>((resolve) => {
            this.#reader = resolve
          })
          this.#reader = undefined
        }
        return { value: undefined, done: true }
      },
      return: async () => {
        await this.close()
        return { value: undefined, done: true }
      },
    }
  }

  /** Iterator form: each message waits in `#deliveries` until the loop has finished with it. */
  readonly #iteratorProcessor: MessageProcessor<T> = {
    handle: (message) =>
      new Promise<boolean>((settle) => {
        this.#deliveries.push({ message, settle })
        this.#reader?.()
      }),
    deadLetter: async (dead) => {
      this.#options.logger.error(
        {
          topic: dead.topic,
          partition: dead.partition,
          offset: String(dead.offset),
          error: dead.error instanceof Error ? dead.error.message : String(dead.error),
        },
        'a consumed record could not be read; skipped',
      )
    },
  }

  /**
   * Stops fetching, lets each partition finish the message in hand (a retry wait is cut short and
   * its message left uncommitted), commits what was handled, and leaves the group.
   */
  close(): Promise<void> {
    this.#closed ??= this.#shutDown()
    return this.#closed
  }

  async #shutDown(): Promise<void> {
    this.#closing = true
    this.#abort.abort()
    this.#stream?.pause()
    this.#current?.(false)
    this.#current = undefined
    for (const delivery of this.#deliveries.splice(0)) delivery.settle(false)
    this.#reader?.()
    let stage = 'joining the group'
    // A close that hangs is otherwise silent: say what it waits for.
    const slow = setInterval(() => {
      this.#options.logger.warn?.(
        { topic: this.topic.name, groupId: this.groupId, waitingFor: stage, workers: this.#workers.size },
        'the consumer is still closing',
      )
    }, 10_000)
    slow.unref()
    try {
      // Without a stream the client is joining (at start or reconnecting), which can take a whole
      // rebalance or a broker's retries: dropping it ends the join at once.
      if (this.#stream === undefined) await this.#consumer?.close(true).catch(() => {})
      await this.#started?.catch(() => {})
      stage = 'a reconnect'
      await this.#reopening
      stage = 'messages in hand'
      while (this.#workers.size > 0) await Promise.allSettled([...this.#workers])
      stage = 'offset commits'
      this.#flushCommits()
      await this.#commitsSettled(COMMIT_WAIT_MS)
      stage = 'leaving the group'
      try {
        await this.#stream?.close()
      } finally {
        await this.#consumer?.close(true)
        stage = 'the processor'
        await this.#processor?.close?.()
      }
    } finally {
      clearInterval(slow)
    }
  }
}
