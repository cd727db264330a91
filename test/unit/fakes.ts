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
    for (const id of [...acknowledged, ...failures.flatMap((f) => f.ids)]) {
      if (!claimed.has(id)) throw new Error(`${this.name}: ${id} completed but not claimed`)
    }
    this.calls.push({ op: 'complete', acknowledged: [...acknowledged], failures: [...failures] })
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
    this.claimed = undefined
  }

  async abandon(): Promise<void> {
    this.calls.push({ op: 'abandon', ids: [...(this.claimed ?? [])] })
    this.claimed = undefined
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
