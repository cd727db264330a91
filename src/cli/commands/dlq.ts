import { createInterface } from 'node:readline/promises'
import type { DeadLetter, DeadLetterFilter } from '../../core/dead-letters.ts'
import { adminFor, target } from '../database.ts'
import { bytesText, print, printJson, table } from '../output.ts'
import { CONNECTION_HELP, CONNECTION_OPTIONS, parse, positiveInteger, UsageError } from '../usage.ts'

export const DLQ_HELP = `Usage: k-entity dlq list [filters] [--limit N]
       k-entity dlq show <id>
       k-entity dlq replay [filters] [--yes]
       k-entity dlq purge [filters] [--yes]

Dead letters: messages the relay gave up on. replay moves them back into the outbox as new
messages (each at the end of its key's queue); purge deletes them. Both ask for confirmation
on a terminal, and refuse without one unless --yes is given.
Filters:
  --topic NAME         only this topic
  --id ID              only this dead letter (repeat for several)
  --dead-before TIME   only those buried before this ISO time (2026-12-01T00:00:00Z)
  --all                replay or purge every dead letter (needed when no filter is given)
  --limit N            list at most N (default 100, at most 10000)
  --yes                do not ask for confirmation

${CONNECTION_HELP}`

const DLQ_OPTIONS = {
  ...CONNECTION_OPTIONS,
  topic: { type: 'string' },
  id: { type: 'string', multiple: true },
  'dead-before': { type: 'string' },
  all: { type: 'boolean' },
  limit: { type: 'string' },
  yes: { type: 'boolean', short: 'y' },
} as const

export async function dlq(args: string[]): Promise<number> {
  const { values, positionals } = parse('dlq', args, DLQ_OPTIONS, true)
  const [action, ...rest] = positionals
  if (values.help) {
    print(DLQ_HELP)
    return 0
  }
  if (action === undefined)
    throw new UsageError('dlq needs an action: list, show <id>, replay or purge; see k-entity dlq --help')
  if (!['list', 'show', 'replay', 'purge'].includes(action)) {
    throw new UsageError(`unknown dlq action '${action}': use list, show <id>, replay or purge`)
  }
  if (action === 'show' ? rest.length !== 1 : rest.length > 0) {
    throw new UsageError(
      action === 'show'
        ? 'dlq show takes one dead-letter id: k-entity dlq show 42'
        : `unexpected argument '${rest[0]}'; see k-entity dlq --help`,
    )
  }
  const filter = filterOf(values, action)
  const t = target(values)
  const admin = adminFor(t)
  try {
    const letters = admin.deadLetters
    if (action === 'list') {
      const found = await letters.list(filter)
      if (values.json) printJson(found.map(plain))
      else if (found.length === 0) print('no dead letters match')
      else {
        print(
          table(
            ['ID', 'TOPIC', 'ATTEMPTS', 'DEAD AT', 'LAST ERROR'],
            found.map((letter) => [
              letter.id,
              letter.topic,
              letter.attempts,
              letter.deadAt.toISOString(),
              oneLine(letter.errors.at(-1)?.error ?? ''),
            ]),
          ),
        )
      }
      return 0
    }
    if (action === 'show') {
      const id = rest[0] as string
      if (!/^\d{1,19}$/.test(id))
        throw new UsageError(`dead-letter ids are whole numbers (from k-entity dlq list), got '${id}'`)
      const [letter] = await letters.list({ ids: [id] })
      if (letter === undefined) {
        process.stderr.write(`no dead letter with id ${id} (k-entity dlq list shows them)\n`)
        return 1
      }
      if (values.json) printJson(plain(letter))
      else print(describeLetter(letter))
      return 0
    }
    const count = await letters.count({ ...filter, limit: undefined })
    if (count === 0) {
      if (values.json) printJson({ action, count: 0 })
      else print(`no dead letters match; nothing to ${action}`)
      return 0
    }
    const what = `${action} ${count} dead letter${count === 1 ? '' : 's'}${describeFilter(filter)}`
    if (!values.yes && !(await confirm(what))) {
      process.stderr.write('cancelled; nothing changed\n')
      return 1
    }
    const done = action === 'replay' ? await letters.replay(filter) : await letters.purge(filter)
    if (values.json) printJson({ action, count: done })
    else print(`${action === 'replay' ? 'replayed' : 'purged'} ${done} dead letter${done === 1 ? '' : 's'}`)
    return 0
  } finally {
    await admin.close()
  }
}

function filterOf(
  values: { topic?: string; id?: string[]; 'dead-before'?: string; all?: boolean; limit?: string },
  action: string,
): DeadLetterFilter {
  const filter: DeadLetterFilter = {}
  if (values.topic !== undefined) filter.topic = values.topic
  if (values.id !== undefined) {
    const bad = values.id.find((id) => !/^\d{1,19}$/.test(id))
    if (bad !== undefined)
      throw new UsageError(`--id takes dead-letter ids (whole numbers from k-entity dlq list), got '${bad}'`)
    filter.ids = values.id
  }
  if (values['dead-before'] !== undefined) {
    const date = new Date(values['dead-before'])
    if (Number.isNaN(date.getTime())) {
      throw new UsageError(
        `--dead-before takes an ISO time like 2026-12-01T00:00:00Z, got '${values['dead-before']}'`,
      )
    }
    filter.deadBefore = date
  }
  if (values.all) filter.all = true
  const limit = positiveInteger(values.limit, 'limit', 10_000)
  if (limit !== undefined) {
    if (action !== 'list') throw new UsageError('--limit applies to dlq list only')
    filter.limit = limit
  }
  if (
    (action === 'replay' || action === 'purge') &&
    values.topic === undefined &&
    values.id === undefined &&
    values['dead-before'] === undefined &&
    !values.all
  ) {
    throw new UsageError(
      `dlq ${action} with no --topic, --id or --dead-before would act on every dead letter: pass --all if that is what you want`,
    )
  }
  return filter
}

function describeFilter(filter: DeadLetterFilter): string {
  const parts: string[] = []
  if (filter.topic !== undefined) parts.push(`topic ${filter.topic}`)
  if (filter.ids !== undefined) parts.push(`id ${filter.ids.join(', ')}`)
  if (filter.deadBefore !== undefined) parts.push(`dead before ${filter.deadBefore.toISOString()}`)
  return parts.length === 0 ? ' (all)' : ` (${parts.join(', ')})`
}

/** Asks on the terminal; without one (a script, a pipe) refuses, since nobody can answer. */
async function confirm(what: string): Promise<boolean> {
  if (!process.stdin.isTTY) {
    throw new UsageError(
      `refusing to ${what} without confirmation: no terminal to ask on; pass --yes to go ahead`,
    )
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr })
  try {
    const answer = await rl.question(`${what[0]?.toUpperCase()}${what.slice(1)}? [y/N] `)
    return /^y(es)?$/i.test(answer.trim())
  } finally {
    rl.close()
  }
}

function plain(letter: DeadLetter) {
  return {
    ...letter,
    key: bytesText(letter.key),
    value: bytesText(letter.value),
    headers: letter.headers.map(([name, value]) => [name, bytesText(value)]),
  }
}

function oneLine(text: string): string {
  const line = text.replace(/\s+/g, ' ')
  return line.length > 80 ? `${line.slice(0, 79)}…` : line
}

function describeLetter(letter: DeadLetter): string {
  const lines = [
    `id          ${letter.id} (outbox message ${letter.messageId})`,
    `topic       ${letter.topic}`,
    `key         ${bytesText(letter.key) ?? '(none)'}`,
    `value       ${bytesText(letter.value) ?? '(none)'}`,
    `headers     ${letter.headers.length === 0 ? '(none)' : letter.headers.map(([name, value]) => `${name}=${bytesText(value) ?? ''}`).join(', ')}`,
    `attempts    ${letter.attempts}`,
    `created at  ${letter.createdAt.toISOString()}`,
    `dead at     ${letter.deadAt.toISOString()}`,
    'errors:',
    ...letter.errors.map((e) => `  ${e.at}  ${e.error}`),
  ]
  return lines.join('\n')
}
