// In-memory stand-ins for the relay's seams (pure logic: no database, no Kafka). The store keeps
// the claim rules that matter to the relay's guarantees: rows come oldest first, rows the other
// session holds are skipped, a row waiting for its retry holds back every later row of its key,
// and only `complete` deletes.
import { HELD_ATTEMPTS } from '../../src/core/seams.ts'
import { encodeHeaders } from '../../src/dialects/shared/stored-columns.ts'
import type {
  FailedDelivery,
  MessageTransport,
  OutboxRecord,
  RelayEvent,
  RelayStore,
  SendFailure,
  SendProgress,
  StoredMessage,
} from '../../src/index.ts'

export interface Row extends StoredMessage {
  /** Not claimable before this (ms since the epoch); failures set it. */
  retryAt: number
}

export interface DeadLetter {
  id: string
  error: string
}

/** The outbox table, shared by a store and its companion. */
export class FakeOutbox {
  rows: Row[] = []
  deadLetters: DeadLetter[] = []
  #nextId = 1

  /** Adds `count` messages per key, interleaved (k0-0, k1-0, k0-1, ...), all on `topic`. */
  add(keys: readonly number[], count: number, topic = 't'): void {
    for (let seq = 0; seq < count; seq++) {
      for (const key of keys) this.addOne(topic, key, seq)
    }
  }

  addOne(topic: string, key: number | null, seq = 0): Row {
    const id = String(this.#nextId++)
    const row: Row = {
      id,
      topic,
      key: key === null ? null : Buffer.from(String(key)),
      value: Buffer.from(`${topic}/${key}/${seq}/${id}`),
      headers: [],
      orderingHash: key,
      attempts: 0,
      retryAt: 0,
    }
    this.rows.push(row)
    return row
  }

  row(id: string): Row | undefined {
    return this.rows.find((r) => r.id === id)
  }

  ids(): string[] {
    return this.rows.map((r) => r.id)
  }
}

/** Calls on a store, in order, for assertions. */
export type StoreCall =
  | { op: 'claim'; ids: string[] }
  | { op: 'complete'; acknowledged: string[]; failures: FailedDelivery[] }
  | { op: 'abandon'; ids: string[] }
  | { op: 'completeHeld'; acknowledged: string[]; failures: FailedDelivery[] }
  | { op: 'close' }

/** Key, value and stored headers bytes: what the SQL stores count against a claim's byte budget. */
export function storedBytes(message: StoredMessage): number {
  return (
    (message.key?.length ?? 0) + (message.value?.length ?? 0) + (encodeHeaders(message.headers)?.length ?? 0)
  )
}

export class FakeStore implements RelayStore {
  readonly outbox: FakeOutbox
  readonly name: string
  healthy = true
  calls: StoreCall[] = []
  /** Rows this session holds in its open claim. */
  claimed: string[] | undefined
  #other: FakeStore | undefined
  /** Makes the next calls of one operation throw (checked before the operation). */
  failures: Partial<Record<'claim' | 'complete' | 'connect', () => unknown>> = {}
  /** With `pipelined`: a second session of the same relay over the same outbox. */
  readonly #pipelined: boolean

  constructor(outbox: FakeOutbox, options: { pipelined?: boolean; name?: string } = {}) {
    this.outbox = outbox
    this.#pipelined = options.pipelined === true
    this.name = options.name ?? 'primary'
  }

  async connect(): Promise<void> {
    this.#maybeFail('connect')
    this.healthy = true
  }

  async tryAcquireLeadership(): Promise<boolean> {
    return true
  }

  async claim(limit: number, maxBytes = Number.POSITIVE_INFINITY): Promise<StoredMessage[]> {
    await Promise.resolve()
    this.#maybeFail('claim')
    if (this.claimed !== undefined) throw new Error(`${this.name}: a claim is already open`)
    const held = new Set(this.#other?.claimed ?? [])
    const blocked = new Set<number>()
    const taken: Row[] = []
    let bytes = 0
    for (const row of this.outbox.rows) {
      if (taken.length >= limit) break
      const hash = row.orderingHash
      if (hash !== null && blocked.has(hash)) continue
      // Like SKIP LOCKED: rows the other session holds are skipped, but later rows of their keys
      // may be claimed (the relay sends them only after Kafka acknowledged the other batch).
      if (held.has(row.id)) continue
      if (row.retryAt > Date.now()) {
        if (hash !== null) blocked.add(hash)
        continue
      }
      // Like the SQL stores' byte budget: stop before the row that would pass it, but never
      // before the first row, so a message larger than the budget still goes (alone).
      const size = storedBytes(row)
      if (taken.length > 0 && bytes + size > maxBytes) break
      bytes += size
      taken.push(row)
    }
    const ids = taken.map((r) => r.id)
    this.calls.push({ op: 'claim', ids })
    // Like the SQL stores: a claim that found nothing holds nothing, so no claim stays open.
    this.claimed = ids.length > 0 ? ids : undefined
    // Copies, as a database hands out: the relay cannot change the table through them.
    return taken.map(({ retryAt: _, ...message }) => ({ ...message, attempts: message.attempts }))
  }

  async complete(acknowledged: readonly string[], failures: readonly FailedDelivery[] = []): Promise<void> {
    await Promise.resolve()
    this.#maybeFail('complete')
    if (this.claimed === undefined) throw new Error(`${this.name}: complete() without an open claim`)
    const claimed = new Set(this.claimed)
    for (const id of failures.flatMap((f) => f.ids)) {
      if (!claimed.has(id) && !this.#heldOrBehind(id))
        throw new Error(`${this.name}: ${id} completed but neither claimed nor held`)
    }
    // A late acknowledgement rides along with a claim's delete: only rows held (or gone) may be in it.
    for (const id of acknowledged) {
      if (!claimed.has(id) && !this.#heldOrBehind(id))
        throw new Error(`${this.name}: ${id} deleted but neither claimed nor held`)
    }
    this.calls.push({ op: 'complete', acknowledged: [...acknowledged], failures: [...failures] })
    this.#apply(acknowledged, failures)
    this.claimed = undefined
  }

  async abandon(): Promise<void> {
    this.calls.push({ op: 'abandon', ids: [...(this.claimed ?? [])] })
    this.claimed = undefined
  }

  async completeHeld(
    acknowledged: readonly string[],
    failures: readonly FailedDelivery[] = [],
  ): Promise<void> {
    await Promise.resolve()
    if (this.claimed !== undefined) throw new Error(`${this.name}: completeHeld() with a claim open`)
    for (const id of [...acknowledged, ...failures.flatMap((f) => f.ids)]) {
      if (!this.#heldOrBehind(id)) throw new Error(`${this.name}: ${id} is not held`)
    }
    this.calls.push({ op: 'completeHeld', acknowledged: [...acknowledged], failures: [...failures] })
    this.#apply(acknowledged, failures)
  }

  /** Deletes `acknowledged`, records `failures` (held, retried or dead-lettered), as the SQL stores do. */
  #apply(acknowledged: readonly string[], failures: readonly FailedDelivery[]): void {
    const gone = new Set(acknowledged)
    for (const failure of failures) {
      for (const id of failure.ids) {
        const row = this.outbox.row(id)
        if (row === undefined) continue
        if (failure.deadLetter) {
          gone.add(id)
          this.outbox.deadLetters.push({ id, error: failure.error })
        } else {
          // Like the SQL stores: a held row keeps its counted attempts, marked by HELD_ATTEMPTS.
          row.attempts =
            failure.countAttempt === false
              ? (row.attempts % HELD_ATTEMPTS) + HELD_ATTEMPTS
              : (row.attempts % HELD_ATTEMPTS) + 1
          row.retryAt = Date.now() + failure.retryInMs
        }
      }
    }
    this.outbox.rows = this.outbox.rows.filter((r) => !gone.has(r.id))
  }

  async waitForWork(ms: number, signal: AbortSignal): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, Math.min(ms, 5))
      signal.addEventListener('abort', () => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  async close(): Promise<void> {
    this.calls.push({ op: 'close' })
    // The database rolls back an open claim: its rows stay in the outbox, untouched.
    this.claimed = undefined
    this.healthy = false
  }

  /** The companion session, once the relay asked for it. */
  get other(): FakeStore | undefined {
    return this.#other
  }

  companion?: () => RelayStore = () => {
    if (!this.#pipelined) throw new Error('not pipelined')
    const other = new FakeStore(this.outbox, { name: 'companion' })
    other.#other = this
    this.#other = other
    return other
  }

  /**
   * Gone, held, or behind a held row of its key (sent with it, so no claim can take it): the
   * rows a late acknowledgement may delete.
   */
  #heldOrBehind(id: string): boolean {
    const row = this.outbox.row(id)
    if (row === undefined || row.attempts >= HELD_ATTEMPTS) return true
    return this.outbox.rows.some(
      (r) =>
        r.orderingHash !== null &&
        r.orderingHash === row.orderingHash &&
        Number(r.id) < Number(row.id) &&
        r.attempts >= HELD_ATTEMPTS,
    )
  }

  #maybeFail(op: 'claim' | 'complete' | 'connect'): void {
    const fail = this.failures[op]
    if (fail === undefined) return
    const error = fail()
    if (error !== undefined) throw error
  }
}

/** A store without a companion: the relay works one batch at a time. */
export function singleStore(outbox: FakeOutbox): FakeStore {
  const store = new FakeStore(outbox)
  store.companion = undefined
  return store
}

/**
 * Kafka as a list of what it acknowledged, in order. `answer` decides each send: return
 * `undefined` to take every record, return failures (as `SendRejection.failed`) to take the rest,
 * or throw to reject the whole send.
 */
export class FakeKafka implements MessageTransport {
  log: OutboxRecord[] = []
  sends: StoredMessage[][] = []
  closed = false
  answer: (records: StoredMessage[], send: number) => SendFailure[] | undefined

  constructor(
    answer: (records: StoredMessage[], send: number) => SendFailure[] | undefined = () => undefined,
  ) {
    this.answer = answer
  }

  async send(records: readonly OutboxRecord[]): Promise<void> {
    const batch = records as StoredMessage[]
    this.sends.push([...batch])
    await Promise.resolve()
    const failed = this.answer(batch, this.sends.length)
    const refused = new Set(failed?.map((f) => f.index))
    batch.forEach((record, index) => {
      if (!refused.has(index)) this.log.push(record)
    })
    if (failed !== undefined && failed.length > 0) {
      throw Object.assign(new Error(`${failed.length} records not acknowledged`), { failed })
    }
  }

  async close(): Promise<void> {
    this.closed = true
  }

  /** Ids Kafka took for `key`, first occurrence only (a duplicate is not a reorder). */
  order(key: number): string[] {
    const seen = new Set<string>()
    for (const record of this.log) {
      const id = (record as StoredMessage).id
      if (record.orderingHash === key) seen.add(id)
    }
    return [...seen]
  }

  /** Every id Kafka took at least once. */
  delivered(): Set<string> {
    return new Set(this.log.map((r) => (r as StoredMessage).id))
  }
}

/** Collects a relay's events; `waitFor` resolves once one matches. */
export class Events {
  all: RelayEvent[] = []
  #waiters: Array<{ match: (e: RelayEvent) => boolean; resolve: (e: RelayEvent) => void }> = []

  readonly onEvent = (event: RelayEvent): void => {
    this.all.push(event)
    this.#waiters = this.#waiters.filter((w) => {
      if (!w.match(event)) return true
      w.resolve(event)
      return false
    })
  }

  of<T extends RelayEvent['type']>(type: T): Array<Extract<RelayEvent, { type: T }>> {
    return this.all.filter((e): e is Extract<RelayEvent, { type: T }> => e.type === type)
  }

  waitFor(match: (e: RelayEvent) => boolean, ms = 5000): Promise<RelayEvent> {
    const found = this.all.find(match)
    if (found) return Promise.resolve(found)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching event within ${ms} ms`)), ms)
      this.#waiters.push({
        match,
        resolve: (e) => {
          clearTimeout(timer)
          resolve(e)
        },
      })
    })
  }
}

/** Resolves when `check()` holds, polling every few ms; rejects after `ms`. */
export async function until(check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
}

/** A logger that keeps its lines. */
export function memoryLogger(): {
  lines: Array<{ level: string; context: object; message: string }>
  logger: Record<'error' | 'warn' | 'info' | 'debug', (context: object, message: string) => void>
} {
  const lines: Array<{ level: string; context: object; message: string }> = []
  const at = (level: string) => (context: object, message: string) => {
    lines.push({ level, context, message })
  }
  return { lines, logger: { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') } }
}

/**
 * Kafka with partitions (a record's partition is its key modulo `partitions`), each acknowledged
 * on its own as the Kafka transport's produce calls are, with `progress` reports. A stalled
 * partition (its leader died) keeps its records unacknowledged until `release` writes them
 * (`'ack'`) or fails them (`'fail'`, nothing written).
 */
export class PartitionedKafka implements MessageTransport {
  log: StoredMessage[] = []
  readonly partitions: number
  readonly landsWithinMs: number | undefined
  /** Partition -> sends waiting on it. */
  readonly #stalled = new Map<number, Array<(outcome: 'ack' | 'fail') => void>>()
  readonly #stalledPartitions = new Set<number>()
  sends = 0

  constructor(partitions: number, landsWithinMs: number | undefined) {
    this.partitions = partitions
    this.landsWithinMs = landsWithinMs
  }

  partitionOf(record: OutboxRecord): number {
    return (record.orderingHash ?? 0) % this.partitions
  }

  stall(partition: number): void {
    this.#stalledPartitions.add(partition)
  }

  /** Ends the stall: waiting records are written or failed, and later sends go through. */
  release(partition: number, outcome: 'ack' | 'fail'): void {
    this.#stalledPartitions.delete(partition)
    const waiting = this.#stalled.get(partition) ?? []
    this.#stalled.delete(partition)
    for (const settle of waiting) settle(outcome)
  }

  async send(records: readonly OutboxRecord[], progress?: SendProgress): Promise<void> {
    this.sends++
    const batch = records as StoredMessage[]
    const groups = new Map<number, number[]>()
    batch.forEach((record, index) => {
      const partition = this.partitionOf(record)
      groups.set(partition, [...(groups.get(partition) ?? []), index])
    })
    const failed: SendFailure[] = []
    await Promise.all(
      [...groups].map(async ([partition, indexes]) => {
        await new Promise((resolve) => setTimeout(resolve, 1))
        let outcome: 'ack' | 'fail' = 'ack'
        if (this.#stalledPartitions.has(partition)) {
          outcome = await new Promise<'ack' | 'fail'>((resolve) => {
            this.#stalled.set(partition, [...(this.#stalled.get(partition) ?? []), resolve])
          })
        }
        if (outcome === 'fail') {
          const error = new Error(`partition ${partition}: request timed out`)
          for (const index of indexes) failed.push({ index, error, retryable: true, countsAsAttempt: false })
          return
        }
        for (const index of indexes) this.log.push(batch[index] as StoredMessage)
        progress?.acknowledged(indexes)
      }),
    )
    if (failed.length > 0) {
      throw Object.assign(new Error(`${failed.length} records not acknowledged`), { failed })
    }
  }

  async close(): Promise<void> {}

  /** Ids Kafka took for `key`, first occurrence only (a duplicate is not a reorder). */
  order(key: number): string[] {
    return [...new Set(this.log.filter((r) => r.orderingHash === key).map((r) => r.id))]
  }
}
