import { setTimeout as sleep } from 'node:timers/promises'
import { DEFAULT_COUNT_CAP } from '../../admin/figures.ts'
import type { OutboxStatus } from '../../admin/types.ts'
import { adminFor, type Target, target } from '../database.ts'
import { duration, print, printJson, table } from '../output.ts'
import { CONNECTION_HELP, CONNECTION_OPTIONS, parse, positiveInteger } from '../usage.ts'

export const STATUS_HELP = `Usage: k-entity status [--watch [--interval S]] [--cap N] [connection options]

Pending, ready and retrying messages, dead letters and the oldest message's age, per topic,
and the relays the database can see. Cheap on any backlog: counts are exact up to --cap and
estimated above it (marked "about").
  --watch          print again every --interval seconds until Ctrl-C
  --interval S     seconds between two prints with --watch (default 2)
  --cap N          rows counted exactly before the estimate takes over (default 100000)

${CONNECTION_HELP}`

export async function status(args: string[]): Promise<number> {
  const { values } = parse('status', args, {
    ...CONNECTION_OPTIONS,
    watch: { type: 'boolean' },
    interval: { type: 'string' },
    cap: { type: 'string' },
  })
  if (values.help) {
    print(STATUS_HELP)
    return 0
  }
  const interval = positiveInteger(values.interval, 'interval', 3600) ?? 2
  const countCap = positiveInteger(values.cap, 'cap', 10_000_000)
  const t = target(values)
  const admin = adminFor(t)
  const stop = new AbortController()
  const onSignal = () => stop.abort()
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    for (;;) {
      const figures = await admin.status(countCap === undefined ? undefined : { countCap })
      if (values.json) {
        // One document per line when watching, so a script can read them as they come.
        if (values.watch) print(JSON.stringify(figures))
        else printJson(figures)
      } else print(render(figures, t, admin.database, countCap ?? DEFAULT_COUNT_CAP))
      if (!values.watch) return 0
      try {
        await sleep(interval * 1000, undefined, { signal: stop.signal })
      } catch {
        return 0
      }
      if (!values.json) print('')
    }
  } finally {
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    await admin.close()
  }
}

function render(s: OutboxStatus, t: Target, database: string, cap: number): string {
  // One `exact` flag covers every count; each count says "about" only where it can be estimated.
  const about = s.exact || s.pending <= cap ? '' : 'about '
  const aboutDead = s.exact || s.deadLetters <= cap ? '' : 'about '
  const lines = [
    `${database} at ${t.where}, outbox ${t.schema ?? 'k_entity'}.${t.table ?? 'outbox'}, ${s.at.toISOString()}`,
    `pending ${about}${s.pending} (ready ${about}${s.ready}, retrying ${s.retrying}), dead letters ${aboutDead}${s.deadLetters}, oldest pending ${s.pending === 0 ? '-' : duration(s.oldestPendingMs)}`,
  ]
  if (s.topics.length > 0) {
    lines.push(
      '',
      table(
        ['TOPIC', 'PENDING', 'READY', 'RETRYING', 'DEAD', 'OLDEST'],
        s.topics.map((topic) => [
          topic.topic,
          topic.pending,
          topic.ready,
          topic.retrying,
          topic.deadLetters,
          topic.pending === 0 ? '-' : duration(topic.oldestPendingMs),
        ]),
      ),
    )
  }
  if (!s.exact) lines.push('', 'Counts above the cap are estimates (--cap raises it).')
  lines.push('')
  if (s.relays.length === 0) {
    lines.push(t.database === 'sqlite' ? 'relays: not visible on SQLite' : 'relays: none holds this outbox')
  } else {
    lines.push(
      table(
        ['RELAY', 'ROLE', 'MODE', 'CLIENT', 'SINCE'],
        s.relays.map((relay) => [
          relay.name,
          relay.role,
          relay.mode,
          relay.client ?? '-',
          relay.since?.toISOString() ?? '-',
        ]),
      ),
    )
  }
  return lines.join('\n')
}
