// Relay configurations that are being built while this benchmark exists: several relays sharing
// the work (`mode: 'concurrent'`) and a database wake-up (LISTEN/NOTIFY). Rows that need them
// print "n/a (not implemented yet)" until the relay accepts them; nothing is simulated.
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { createPgOutbox } from '../../src/adapters/pg/index.ts'
import { defineTopic, type RelayOptions } from '../../src/index.ts'

export interface Features {
  /** The relay accepts `mode: 'concurrent'`. */
  concurrent: boolean
  /** Relay options that turn the database wake-up on, or undefined while there is none. */
  wakeUp: Record<string, unknown> | undefined
  /** Relay options that turn it off (polling only), `{}` while there is no wake-up at all. */
  pollingOnly: Record<string, unknown>
  /** How the wake-up option was found (for the report). */
  wakeUpOption: string | undefined
  /** The outbox has a `notify` option (NOTIFY sent by producing transactions). */
  outboxNotifyOption: boolean
  /** The relay accepts `listen: 'eager'` (claims again at once after a batch while notified). */
  eagerWakeUp: boolean
}

const SRC = resolve(import.meta.dirname, '..', '..', 'src')

function source(path: string): string {
  try {
    return readFileSync(resolve(SRC, path), 'utf8')
  } catch {
    return ''
  }
}

/** True when the relay's option validation accepts these options (probed, never started). */
function relayAccepts(options: RelayOptions & Record<string, unknown>): boolean {
  const outbox = createPgOutbox({
    topics: { probe: defineTopic({ name: 'probe' }) },
    kafka: { brokers: ['127.0.0.1:9'] },
  })
  try {
    const relay = outbox.relay({ connection: 'postgres://probe@127.0.0.1:9/probe', ...options })
    void relay.stop({ timeout: 0 }).catch(() => {})
    return true
  } catch {
    return false
  }
}

/**
 * The wake-up option's name is not settled yet; these are the names the design discussion used.
 * Each is looked up as an option declared in the relay's option interfaces; a boolean option is
 * passed `true`, a string option is passed 'notify' / 'listen' when that literal is declared.
 */
const WAKE_UP_CANDIDATES = ['wakeUp', 'listen', 'listenNotify', 'notify', 'useNotify']

function detectWakeUp(): { options: Record<string, unknown>; how: string } | undefined {
  const text = `${source('core/relay.ts')}\n${source('dialects/postgres/postgres-outbox.ts')}\n${source('dialects/postgres/relay-store.ts')}`
  for (const name of WAKE_UP_CANDIDATES) {
    const declaration = new RegExp(`\\b${name}\\?\\s*:\\s*([^\\n]+)`).exec(text)
    if (!declaration?.[1]) continue
    const type = declaration[1]
    const candidates: unknown[] = []
    if (/\bboolean\b/.test(type)) candidates.push(true)
    for (const literal of ['notify', 'listen', 'listen-notify', 'postgres']) {
      if (type.includes(`'${literal}'`)) candidates.push(literal)
    }
    if (candidates.length === 0) candidates.push(true)
    for (const value of candidates) {
      const options = { [name]: value }
      if (relayAccepts(options)) return { options, how: `${name}: ${JSON.stringify(value)}` }
    }
  }
  return undefined
}

export function detectFeatures(): Features {
  const concurrent =
    /['"]concurrent['"]/.test(source('core/relay.ts')) && relayAccepts({ mode: 'concurrent' as never })
  const wakeUp = detectWakeUp()
  const pollingOnly: Record<string, unknown> = {}
  for (const [name, value] of Object.entries(wakeUp?.options ?? {})) {
    // A boolean switch is turned off; a string setting has no known "off" value, so leave it.
    if (typeof value === 'boolean') pollingOnly[name] = false
  }
  const outboxNotifyOption = /\bnotify\?\s*:\s*boolean/.test(source('dialects/postgres/postgres-outbox.ts'))
  const eagerWakeUp = relayAccepts({ listen: 'eager' } as never)
  return {
    concurrent,
    wakeUp: wakeUp?.options,
    pollingOnly,
    wakeUpOption: wakeUp?.how,
    outboxNotifyOption,
    eagerWakeUp,
  }
}
