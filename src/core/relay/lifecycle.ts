import { publishRelayEvent, publishRelayLifecycle } from '../../observability/channels.ts'
import { ErrorCodes, invalidArgument, KEntityError } from '../errors.ts'
import type { NodeMode, RelayOptions, StopOptions } from '../relay.ts'
import { RelayLog } from '../relay-log.ts'
import type { MessageTransport, RelayStore } from '../seams.ts'
import { waitAtMost } from '../wait.ts'
import { Delivery } from './delivery.ts'
import { relayEmitter } from './events.ts'
import { Leadership } from './leadership.ts'
import { RelayLoop } from './loop.ts'
import { type ResolvedOptions, resolveOptions } from './options.ts'
import { Pipeline } from './pipeline.ts'

/**
 * Moves committed outbox messages to Kafka: claim a batch oldest first, send it as one batch,
 * delete exactly what Kafka acknowledged. The loop knows nothing about SQL or Kafka clients;
 * it only drives a RelayStore and a MessageTransport.
 */
export class OutboxRelay {
  readonly #store: RelayStore
  readonly #transport: MessageTransport
  readonly #options: ResolvedOptions
  /** Log lines for changes of state (see `RelayOptions.logger`). */
  readonly #log: RelayLog
  readonly #leadership: Leadership
  /** Pipelining's second session and its batches (see `RelayOptions.pipeline`). */
  readonly #pipeline: Pipeline | undefined
  readonly #loop: RelayLoop
  #running: Promise<unknown> | undefined
  #closed = false
  /** The release of the sessions and producer once stopped; a second `stop()` waits for it too. */
  #released: Promise<void> | undefined

  constructor(store: RelayStore, transport: MessageTransport, options: RelayOptions = {}) {
    this.#store = store
    this.#transport = transport
    const resolved = resolveOptions(options)
    this.#options = resolved
    this.#log = new RelayLog(resolved.logger, resolved.endpoints, resolved.backoff.max, resolved.now)
    const emit = relayEmitter(resolved.onEvent, this.#log, (event) =>
      publishRelayEvent(this, resolved.mode, event),
    )
    this.#leadership = new Leadership(store, resolved.mode, this.#log, emit)
    const delivery = new Delivery(transport, resolved, emit, typeof store.completeHeld === 'function')
    const companion = resolved.pipeline ? store.companion?.() : undefined
    this.#pipeline =
      companion === undefined
        ? undefined
        : new Pipeline(
            store,
            companion,
            delivery,
            { messages: resolved.maxMessagesPerPoll, bytes: resolved.maxBytesPerPoll },
            () => this.#leadership.leader,
          )
    this.#loop = new RelayLoop(store, resolved, this.#log, this.#leadership, delivery, this.#pipeline)
  }

  /** Single and exclusive mode: this relay holds the leader lock; concurrent: it is admitted to claim. */
  get isLeader(): boolean {
    return this.#leadership.leader && (this.#running !== undefined || this.#options.mode !== 'concurrent')
  }

  /** How this relay shares the outbox with others (`RelayOptions.mode`). */
  get mode(): NodeMode {
    return this.#options.mode
  }

  get isRunning(): boolean {
    return this.#running !== undefined
  }

  /** Starts the background loop; resolves once it runs (it does not wait for the first batch). */
  async start(): Promise<void> {
    this.#assertOpen('start')
    if (this.#running) throw new KEntityError(ErrorCodes.RELAY_RUNNING, 'the relay is already running')
    this.#log.started(this.#options.mode)
    publishRelayLifecycle(this, this.#options.mode, 'started')
    const running = this.#loop.run().finally(() => {
      this.#running = undefined
    })
    this.#running = running
    // The loop ends on its own only for an internal error: the relay then stops as by stop().
    void running.then((fatal) => {
      if (fatal === undefined || this.#closed) return
      this.#closed = true
      this.#log.stopping()
      publishRelayLifecycle(this, this.#options.mode, 'stopping')
      this.#released = this.#release()
    })
  }

  /**
   * Relays at most one batch and returns how many messages Kafka acknowledged. For tests and
   * scripts; do not mix with `start()`.
   */
  async runOnce(): Promise<number> {
    this.#assertOpen('runOnce')
    if (this.#running)
      throw new KEntityError(ErrorCodes.RELAY_RUNNING, 'runOnce() cannot be used while the relay loop runs')
    if (!this.#store.healthy) {
      this.#leadership.forget()
      await this.#store.connect()
    }
    if (!(await this.#leadership.ensure())) return 0
    return (await this.#loop.relayBatch()).count
  }

  /** Relays until a poll finds nothing ready; returns the number of messages dealt with. */
  async drain(): Promise<number> {
    let total = 0
    for (;;) {
      const count = await this.runOnce()
      total += count
      // A short batch is not the end: isolating a failure can leave other keys ready.
      if (count === 0) return total
    }
  }

  /** Nudges the loop to poll now instead of at the end of its polling interval. */
  wake(): void {
    this.#loop.wake()
  }

  /**
   * Stops claiming, lets the in-flight batch finish within `timeout`, then closes the database
   * session (which releases an unfinished claim: its messages stay in the outbox) and the producer.
   */
  async stop(options: StopOptions = {}): Promise<void> {
    if (this.#closed) return this.#released
    const timeout = options.timeout ?? 10_000
    if (!Number.isFinite(timeout) || timeout < 0)
      throw invalidArgument(`stop(): 'timeout' must be a number of ms >= 0`)
    this.#closed = true
    this.#log.stopping()
    publishRelayLifecycle(this, this.#options.mode, 'stopping')
    this.#loop.interrupt()
    this.#released = waitAtMost(this.#running, timeout).then(() => this.#release())
    return this.#released
  }

  /**
   * Stops the relay gracefully on SIGTERM/SIGINT (stop claiming, finish or release the in-flight
   * batch within `timeout`), then exits with code 0 unless the application listens to the signal
   * itself. Returns a function that removes the handlers.
   */
  stopOnSignals(options: { signals?: NodeJS.Signals[]; timeout?: number } = {}): () => void {
    const signals = options.signals ?? ['SIGTERM', 'SIGINT']
    if (!Array.isArray(signals) || signals.length === 0 || signals.some((s) => typeof s !== 'string')) {
      throw invalidArgument(
        `stopOnSignals(): 'signals' must be a non-empty array of signal names like ['SIGTERM']`,
      )
    }
    const handler = (signal: NodeJS.Signals) => {
      remove()
      void this.stop({ timeout: options.timeout ?? 10_000 }).finally(() => {
        if (process.listenerCount(signal) === 0) process.exit(0)
      })
    }
    const remove = () => {
      for (const signal of signals) process.removeListener(signal, handler)
    }
    for (const signal of signals) process.on(signal, handler)
    return remove
  }

  #assertOpen(what: string): void {
    if (this.#closed) {
      throw new KEntityError(
        ErrorCodes.RELAY_STOPPED,
        `${what}() was called after stop(); create a new relay instead`,
      )
    }
  }

  /** Once the loop is done or given up on: closes what the relay holds, and says it stopped. */
  async #release(): Promise<void> {
    // Closing the session rolls back an unfinished claim (its messages stay in the outbox);
    // closing the producer aborts a send that is still waiting for the broker.
    await this.#store.close().catch(() => {})
    await this.#pipeline?.companion.close().catch(() => {})
    await this.#transport.close().catch(() => {})
    await waitAtMost(this.#running, 5000)
    this.#leadership.set(false)
    this.#log.stopped()
    publishRelayLifecycle(this, this.#options.mode, 'stopped')
    this.#options.onStop()
  }
}
