import { boundedEstimate, buildStatus, type CappedSample, type SampledTopic } from '../../admin/figures.ts'
import type { OutboxStatus, RelayNodeStatus } from '../../admin/types.ts'
import { internalError } from '../../core/errors.ts'
import type { OutboxTable } from '../../core/seams.ts'
import { lockClass, qualified } from './names.ts'
import { hasParkedTable, parkedTable } from './parking.ts'
import { lastResult, type PgSession } from './session.ts'

type OpenSession = () => Promise<PgSession>

/**
 * `status()` on PostgreSQL. Every statement is bounded by the cap: the oldest `cap + 1` rows by
 * primary key, the retrying rows through the partial retry index, and, only when the sample
 * overflows, the planner's size (reltuples scaled to the relation's current pages, as the
 * planner itself does) kept within the id range. `relays: false` for PGlite, which has no other
 * sessions to show.
 */
export async function postgresStatus(
  table: OutboxTable,
  open: OpenSession,
  cap: number,
  options: { relays: boolean } = { relays: true },
): Promise<OutboxStatus> {
  const session = await open()
  try {
    const run = async (text: string, values?: unknown[]) => lastResult(await session.query(text, values)).rows
    const outbox = qualified(table)
    const dead = qualified(table, '_dead_letters')
    const limit = Math.trunc(cap) + 1
    // One round trip: a scrape's cost is mostly latency on a busy server, not these bounded reads.
    const statements = [
      `SELECT now() AS at,
  COALESCE((SELECT (extract(epoch FROM now() - created_at) * 1000)::bigint FROM ${outbox} ORDER BY id LIMIT 1), 0) AS oldest`,
      `SELECT topic, count(*)::int AS n, (extract(epoch FROM now() - min(created_at)) * 1000)::bigint AS oldest
FROM (SELECT topic, created_at FROM ${outbox} ORDER BY id LIMIT ${limit}) AS sample GROUP BY topic`,
      `SELECT topic, count(*)::int AS n
FROM (SELECT topic FROM ${outbox} WHERE attempts > 0 AND available_at > now() LIMIT ${limit}) AS waiting GROUP BY topic`,
      `SELECT topic, count(*)::int AS n
FROM (SELECT topic FROM ${dead} ORDER BY id LIMIT ${limit}) AS sample GROUP BY topic`,
    ]
    if (options.relays) statements.push(relaysSql(table))
    const answer = await session.query(statements.join(';\n'))
    const results = Array.isArray(answer) ? answer : [answer]
    if (results.length !== statements.length) {
      throw internalError(`status(): ${statements.length} statements gave ${results.length} results`)
    }
    const rows = (i: number) => results[i]?.rows ?? []
    const head = rows(0)[0]
    const pending = withParked(
      await overflowing(run, topics(rows(1)), cap, outbox),
      await parkedSample(session, table, cap, run),
    )
    const deadSample = await overflowing(run, topics(rows(3)), cap, dead)
    return buildStatus({
      at: head?.at as Date,
      cap,
      oldestPendingMs: Number(head?.oldest ?? 0),
      pending,
      retrying: topics(rows(2)),
      dead: deadSample,
      relays: options.relays ? relayNodes(rows(4)) : [],
    })
  } finally {
    await session.end()
  }
}

type Run = (text: string, values?: unknown[]) => Promise<Record<string, unknown>[]>

/**
 * The parked rows (see parking.ts), which are pending too: a sample of at most `cap + 1` of
 * them, with the table's estimated size when it overflows. None on a schema not yet migrated.
 */
async function parkedSample(
  session: PgSession,
  table: OutboxTable,
  cap: number,
  run: Run,
): Promise<CappedSample | undefined> {
  if (!(await hasParkedTable(session, table))) return undefined
  const parked = parkedTable(table)
  const sampled = await run(
    `SELECT topic, count(*)::int AS n, (extract(epoch FROM now() - min(created_at)) * 1000)::bigint AS oldest
FROM (SELECT topic, created_at FROM ${parked} LIMIT ${Math.trunc(cap) + 1}) AS sample GROUP BY topic`,
  )
  return overflowing(run, topics(sampled), cap, parked)
}

/** Outbox and parked samples as one: counts added per topic, the oldest of both kept. */
function withParked(outbox: CappedSample, parked: CappedSample | undefined): CappedSample {
  if (parked === undefined || parked.topics.length === 0) return outbox
  const merged = new Map(outbox.topics.map((topic) => [topic.topic, { ...topic }]))
  for (const topic of parked.topics) {
    const known = merged.get(topic.topic)
    if (known === undefined) merged.set(topic.topic, { ...topic })
    else {
      known.count += topic.count
      if (topic.oldestMs !== undefined)
        known.oldestMs = Math.max(known.oldestMs ?? topic.oldestMs, topic.oldestMs)
    }
  }
  const sum = (sample: CappedSample) =>
    sample.estimate ?? sample.topics.reduce((total, topic) => total + topic.count, 0)
  const overflowed = outbox.estimate !== undefined || parked.estimate !== undefined
  return {
    topics: [...merged.values()],
    ...(overflowed ? { estimate: sum(outbox) + sum(parked) } : {}),
  }
}

function topics(rows: Record<string, unknown>[]): SampledTopic[] {
  return rows.map((row) => ({
    topic: String(row.topic),
    count: Number(row.n),
    ...(row.oldest === undefined ? {} : { oldestMs: Number(row.oldest) }),
  }))
}

/** The sample, with the table's estimated size when it overflowed the cap. */
async function overflowing(
  run: Run,
  sampled: SampledTopic[],
  cap: number,
  relation: string,
): Promise<CappedSample> {
  const count = sampled.reduce((sum, topic) => sum + topic.count, 0)
  if (count <= cap) return { topics: sampled }
  const [row] = await run(
    `SELECT CASE WHEN c.relpages > 0 AND c.reltuples >= 0
    THEN c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::int)
    ELSE -1 END AS planner,
  (SELECT max(id) FROM ${relation}) - (SELECT min(id) FROM ${relation}) + 1 AS id_range
FROM pg_class AS c WHERE c.oid = $1::regclass`,
    [relation],
  )
  const planner = Number(row?.planner ?? -1)
  const idRange = row?.id_range === null || row?.id_range === undefined ? undefined : Number(row.id_range)
  return { topics: sampled, estimate: boundedEstimate(planner, count, idRange) }
}

/**
 * The relays of this table, from its leader lock in pg_locks (taken exclusively by a
 * single/exclusive leader, shared by every session of a concurrent relay) and, for standbys,
 * `k-entity-relay` sessions whose last statement was a try for that lock. Sessions of other
 * users show no statement text without pg_read_all_stats, so their standbys are not listed.
 * The lock class is a number computed here, so it is written into the text.
 */
function relaysSql(table: OutboxTable): string {
  const leader = lockClass(table, 'leader')
  return `SELECT a.pid, a.application_name, host(a.client_addr) AS client, a.client_port, a.backend_start,
  l.mode, a.query
FROM pg_stat_activity AS a
LEFT JOIN pg_locks AS l ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::text::bigint = ${leader >>> 0} AND l.objid::text::bigint = 0 AND l.objsubid = 2
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
  AND (l.pid IS NOT NULL OR (a.application_name LIKE 'k-entity-relay%' AND a.query LIKE '%advisory_lock%(${leader}, 0)%'))
ORDER BY a.backend_start, a.pid`
}

function relayNodes(rows: Record<string, unknown>[]): RelayNodeStatus[] {
  return rows.map((row) => {
    const held = row.mode as string | null
    const shared = held === 'ShareLock' || (held === null && String(row.query).includes('_shared('))
    const node: RelayNodeStatus = {
      name: `${String(row.application_name || 'session')} (pid ${String(row.pid)})`,
      // A leader's lock does not say whether it runs as 'single' or 'exclusive' (the same lock).
      mode: shared ? 'concurrent' : 'unknown',
      role: held === 'ExclusiveLock' ? 'leader' : held === 'ShareLock' ? 'concurrent' : 'standby',
    }
    if (row.client !== null && row.client !== undefined) {
      node.client = row.client_port ? `${String(row.client)}:${String(row.client_port)}` : String(row.client)
    }
    if (row.backend_start instanceof Date) node.since = row.backend_start
    return node
  })
}
