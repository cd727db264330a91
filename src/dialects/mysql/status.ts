import { boundedEstimate, buildStatus, type CappedSample, type SampledTopic } from '../../admin/figures.ts'
import type { OutboxStatus, RelayNodeStatus } from '../../admin/types.ts'
import type { OutboxTable } from '../../core/seams.ts'
import { lockName, qualified } from './names.ts'
import { memberLocks } from './relay-store.ts'
import type { MysqlSession } from './session.ts'

type OpenSession = () => Promise<MysqlSession>
type Run = (text: string, values?: unknown[]) => Promise<Record<string, unknown>[]>

const AGE_MS = (column: string) => `TIMESTAMPDIFF(MICROSECOND, ${column}, UTC_TIMESTAMP(6)) DIV 1000`

/**
 * `status()` on MySQL/MariaDB, every statement bounded by the cap: the oldest `cap + 1` rows by
 * primary key grouped by topic, with their retrying rows (MySQL has no partial index that finds
 * failed rows of null keys, so retries are counted within that sample), and, only when the
 * sample overflows, information_schema's TABLE_ROWS (InnoDB's estimate; MySQL 8 caches it for
 * `information_schema_stats_expiry`) kept within the id range.
 */
export async function mysqlStatus(table: OutboxTable, open: OpenSession, cap: number): Promise<OutboxStatus> {
  const session = await open()
  try {
    // READ COMMITTED: no gap locks that would hold up a relay burying a message meanwhile.
    await session.query('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED')
    const run: Run = async (text, values) => (await session.query(text, values)).rows
    const outbox = qualified(table)
    const dead = qualified(table, '_dead_letters')
    const limit = Math.trunc(cap) + 1
    const [head] = await run(`SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%fZ') AS at,
  COALESCE((SELECT ${AGE_MS('created_at')} FROM ${outbox} ORDER BY id LIMIT 1), 0) AS oldest`)
    const pendingRows = await run(`SELECT topic, COUNT(*) AS n,
  SUM(attempts > 0 AND available_at > UTC_TIMESTAMP(6)) AS retrying, ${AGE_MS('MIN(created_at)')} AS oldest
FROM (SELECT topic, attempts, available_at, created_at FROM ${outbox} ORDER BY id LIMIT ${limit}) AS sample GROUP BY topic`)
    const deadRows = await run(`SELECT topic, COUNT(*) AS n
FROM (SELECT topic FROM ${dead} ORDER BY id LIMIT ${limit}) AS sample GROUP BY topic`)
    const retrying: SampledTopic[] = pendingRows
      .map((row) => ({ topic: String(row.topic), count: Number(row.retrying) }))
      .filter((topic) => topic.count > 0)
    return buildStatus({
      at: new Date(String(head?.at)),
      cap,
      oldestPendingMs: Number(head?.oldest ?? 0),
      pending: await overflowing(run, topics(pendingRows), cap, table, ''),
      retrying,
      dead: await overflowing(run, topics(deadRows), cap, table, '_dead_letters'),
      relays: await relayNodes(run, table),
    })
  } finally {
    await session.end()
  }
}

function topics(rows: Record<string, unknown>[]): SampledTopic[] {
  return rows.map((row) => ({
    topic: String(row.topic),
    count: Number(row.n),
    ...(row.oldest === undefined ? {} : { oldestMs: Number(row.oldest) }),
  }))
}

async function overflowing(
  run: Run,
  sampled: SampledTopic[],
  cap: number,
  table: OutboxTable,
  suffix: string,
): Promise<CappedSample> {
  const count = sampled.reduce((sum, topic) => sum + topic.count, 0)
  if (count <= cap) return { topics: sampled }
  const relation = qualified(table, suffix)
  const [row] = await run(
    `SELECT (SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?) AS planner,
  (SELECT MAX(id) FROM ${relation}) - (SELECT MIN(id) FROM ${relation}) + 1 AS id_range`,
    [table.schema, `${table.table}${suffix}`],
  )
  const planner = row?.planner === null || row?.planner === undefined ? undefined : Number(row.planner)
  const idRange = row?.id_range === null || row?.id_range === undefined ? undefined : Number(row.id_range)
  return { topics: sampled, estimate: boundedEstimate(planner, count, idRange) }
}

/**
 * The relays of this table, from the holders of its user locks (IS_USED_LOCK gives their
 * connection ids): the leader lock for a single/exclusive leader, a member lock for each
 * concurrent relay. A standby holds nothing between its tries, so it cannot be told apart.
 */
async function relayNodes(run: Run, table: OutboxTable): Promise<RelayNodeStatus[]> {
  const names = [lockName(table, 'leader'), ...memberLocks(table)]
  const [row] = await run(`SELECT ${names.map((_, i) => `IS_USED_LOCK(?) AS l${i}`).join(', ')}`, names)
  const holders: { id: number; lock: string; leader: boolean }[] = []
  names.forEach((lock, i) => {
    const id = row?.[`l${i}`]
    if (id !== null && id !== undefined) holders.push({ id: Number(id), lock, leader: i === 0 })
  })
  if (holders.length === 0) return []
  const processes = await run(
    `SELECT ID AS id, HOST AS host, TIME AS seconds FROM information_schema.PROCESSLIST WHERE ID IN (${holders.map(() => '?').join(', ')})`,
    holders.map((holder) => holder.id),
  )
  const byId = new Map(processes.map((process) => [Number(process.id), process]))
  return holders.map((holder) => {
    const node: RelayNodeStatus = {
      name: `${holder.lock} (connection ${holder.id})`,
      mode: holder.leader ? 'unknown' : 'concurrent',
      role: holder.leader ? 'leader' : 'concurrent',
    }
    const host = byId.get(holder.id)?.host
    if (typeof host === 'string' && host !== '') node.client = host
    return node
  })
}
