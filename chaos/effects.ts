/**
 * The end-to-end check (--consumer): the consumers' effects against the producers' ledger. Every
 * committed message on a delivered topic must have its effect applied exactly once; no rolled-back,
 * not-committed or poison message may have one; and the effects of one key on one topic must have
 * been applied in the order the producer committed them (Kafka keeps a key's order per topic; the
 * run checks that on the topics themselves).
 */
import type { TrackedMessage } from '../src/testing/index.ts'
import { consumerDeadLetters, type EffectRow, readEffects } from './consumers.ts'
import { readProduced } from './producers.ts'
import type { Invariant } from './report.ts'
import type { TopicAccessor } from './shared.ts'
import { state } from './state.ts'

export interface EffectsResult {
  consumers: number
  /** Consumer processes started in all (first lives, lives after a kill, lives after an exit). */
  lives: number
  kills: number
  /** Committed messages on the delivered topics: the effects that must exist. */
  expected: number
  /** Effect rows found. */
  rows: number
  lost: number
  phantom: number
  phantomByCause: { rolledBack: number; notCommitted: number; poison: number; foreign: number }
  /** Effect rows applied more than once, and the applications beyond the first. */
  duplicated: number
  extraApplications: number
  outOfOrder: number
  keys: number
  /** As the lives last reported (a kill -9 loses up to 200 ms of counts): at least this many. */
  handledAtLeast: number
  skippedByInboxAtLeast: number
  /** Extra copies of messages in Kafka (relay resends), each of which the inbox had to skip. */
  kafkaDuplicates: number
  deadLetteredReported: number
  deadLetterRows: number
  unexpectedExits: number
  /** Times a consumer dropped its Kafka client and joined again (a failed stream, a gap), at least. */
  reconnectsAtLeast: number
  /** From the outbox being drained (and the relays stopped) until every effect was there. */
  catchUpMs: number | null
  /** Effects applied from a later copy in Kafka than the message's first one (see checkEffects). */
  fromLaterCopy: number
  samples: {
    lost: string[]
    phantom: string[]
    duplicated: string[]
    outOfOrder: string[]
    fromLaterCopy: string[]
  }
}

/**
 * The effects that must exist once everything is consumed, for the wait before the check: the
 * committed messages of the delivered topics, with unknown-outcome transactions whose business
 * rows are all there counted in (verify() resolves them the same way).
 */
export async function expectedEffects(): Promise<number> {
  const produced = readProduced()
  const businessIds = await state.db.businessIds()
  let expected =
    (produced.committed.get('orders')?.length ?? 0) + (produced.committed.get('payments')?.length ?? 0)
  for (const tx of produced.unknown) {
    if (!tx.messages.every((m) => businessIds.has(m.id))) continue
    expected += tx.messages.filter(
      (m, i) => m.id !== tx.poison?.id && (tx.topics[i] === 'orders' || tx.topics[i] === 'payments'),
    ).length
  }
  return expected
}

export async function checkEffects(ledger: {
  committed: Map<TopicAccessor, TrackedMessage[]>
  rolledBack: Map<TopicAccessor, TrackedMessage[]>
  notCommitted: Map<TopicAccessor, TrackedMessage[]>
  poisonIds: Set<string>
  kafkaDuplicates: number
  firstCopies: Map<string, { partition: number; offset: number }>
  catchUpMs: number | null
}): Promise<EffectsResult> {
  const rows = await readEffects()
  const ids = (map: Map<TopicAccessor, TrackedMessage[]>) =>
    new Set([...map.values()].flat().map((m) => m.id))
  const committed = new Map<string, TrackedMessage & { topic: TopicAccessor }>()
  for (const accessor of ['orders', 'payments'] as const)
    for (const m of ledger.committed.get(accessor) ?? []) committed.set(m.id, { ...m, topic: accessor })
  const rolledBack = ids(ledger.rolledBack)
  const notCommitted = ids(ledger.notCommitted)
  const byId = new Map(rows.map((row) => [row.id, row]))
  const samples = {
    lost: [] as string[],
    phantom: [] as string[],
    duplicated: [] as string[],
    outOfOrder: [] as string[],
    fromLaterCopy: [] as string[],
  }
  const sample = (list: string[], text: string) => {
    if (list.length < 10) list.push(text)
  }

  let lost = 0
  for (const id of committed.keys()) {
    if (byId.has(id)) continue
    lost++
    sample(samples.lost, id)
  }
  // An effect applied from a later copy than the first (a relay's resend): the first copy was
  // passed over without its effect, which would have been a lost effect had the relay not resent it.
  let fromLaterCopy = 0
  for (const row of rows) {
    const first = ledger.firstCopies.get(row.id)
    if (first === undefined || (first.partition === row.partition && first.offset === row.offset)) continue
    fromLaterCopy++
    sample(
      samples.fromLaterCopy,
      `${row.id} from p${row.partition}@${row.offset}, first copy p${first.partition}@${first.offset}`,
    )
  }
  const phantomByCause = { rolledBack: 0, notCommitted: 0, poison: 0, foreign: 0 }
  let duplicated = 0
  let extraApplications = 0
  for (const row of rows) {
    if (row.n > 1) {
      duplicated++
      extraApplications += row.n - 1
      sample(samples.duplicated, `${row.id} x${row.n}`)
    }
    const m = committed.get(row.id)
    if (m && m.topic === row.topic && m.key === row.key && m.seq === row.seq) continue
    const cause = rolledBack.has(row.id)
      ? 'rolledBack'
      : notCommitted.has(row.id)
        ? 'notCommitted'
        : ledger.poisonIds.has(row.id)
          ? 'poison'
          : 'foreign'
    phantomByCause[cause]++
    sample(samples.phantom, `${row.id} (${cause})`)
  }

  // Rows come in `applied` order: per topic and key, each seq must be above every one before it.
  const highest = new Map<string, EffectRow>()
  let outOfOrder = 0
  for (const row of rows) {
    const key = `${row.topic}\u0000${row.key}`
    const before = highest.get(key)
    if (before && row.seq < before.seq) {
      outOfOrder++
      sample(
        samples.outOfOrder,
        `${row.id} (${row.topic} ${row.key} seq ${row.seq} from p${row.partition}@${row.offset} by consumer ${row.consumer} life ${row.life}, after seq ${before.seq} from p${before.partition}@${before.offset} by consumer ${before.consumer} life ${before.life})`,
      )
      continue
    }
    highest.set(key, row)
  }

  const lives = state.consumers
  return {
    consumers: new Set(lives.map((c) => c.index)).size,
    lives: lives.length,
    kills: lives.filter((c) => c.killedByUs).length,
    expected: committed.size,
    rows: rows.length,
    lost,
    phantom: Object.values(phantomByCause).reduce((a, b) => a + b, 0),
    phantomByCause,
    duplicated,
    extraApplications,
    outOfOrder,
    fromLaterCopy,
    keys: highest.size,
    handledAtLeast: lives.reduce((sum, c) => sum + c.last.handled, 0),
    skippedByInboxAtLeast: lives.reduce((sum, c) => sum + c.last.duplicates, 0),
    kafkaDuplicates: ledger.kafkaDuplicates,
    deadLetteredReported: lives.reduce((sum, c) => sum + c.last.deadLettered, 0),
    deadLetterRows: await consumerDeadLetters(),
    unexpectedExits: state.consumerUnexpectedExits,
    reconnectsAtLeast: lives.reduce((sum, c) => sum + c.last.reconnects, 0),
    catchUpMs: ledger.catchUpMs,
    samples,
  }
}

export function effectInvariants(e: EffectsResult): Invariant[] {
  const list = (samples: string[]) => (samples.length ? ` (${samples.join(', ')})` : '')
  return [
    {
      name: 'effects exactly once',
      ok: e.lost === 0 && e.duplicated === 0,
      detail: `${e.rows} effects for ${e.expected} committed messages: ${e.lost} lost${list(e.samples.lost)}, ${e.duplicated} applied more than once (${e.extraApplications} extra applications)${list(e.samples.duplicated)} (must be 0 and 0); the inbox skipped at least ${e.skippedByInboxAtLeast} messages seen before (Kafka held ${e.kafkaDuplicates} extra copies from relay resends; the rest are redeliveries after consumer kills and rebalances)`,
    },
    {
      name: 'no phantom effects',
      ok: e.phantom === 0,
      detail: `${e.phantom} effects of messages the ledger does not have as committed (rolled back ${e.phantomByCause.rolledBack}, not committed ${e.phantomByCause.notCommitted}, poison ${e.phantomByCause.poison}, foreign or altered ${e.phantomByCause.foreign})${list(e.samples.phantom)} (must be 0)`,
    },
    {
      name: 'effects in key order',
      ok: e.outOfOrder === 0,
      detail: `${e.outOfOrder} effects applied after a later message of their key on their topic, over ${e.keys} keys${list(e.samples.outOfOrder)} (must be 0)`,
    },
    {
      name: 'first copies applied',
      ok: e.fromLaterCopy === 0,
      detail: `${e.fromLaterCopy} effects applied from a later copy than the message's first one in Kafka (its first copy passed over: without the relay's resend, a lost effect)${list(e.samples.fromLaterCopy)} (must be 0)`,
    },
    {
      name: 'consumers clean',
      ok:
        e.deadLetterRows === 0 &&
        e.deadLetteredReported === 0 &&
        e.unexpectedExits === 0 &&
        e.catchUpMs !== null,
      detail: `${e.lives} consumer lives (${e.kills} killed -9, ${e.unexpectedExits} exited on their own, Kafka clients replaced by the consumers themselves at least ${e.reconnectsAtLeast} times); ${e.deadLetterRows} consumer dead letters (${e.deadLetteredReported} reported); effects complete ${e.catchUpMs === null ? 'never' : `${e.catchUpMs} ms`} after the outbox drained`,
    },
  ]
}
