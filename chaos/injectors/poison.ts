/** A producer commits a poison message (too large, missing topic, internal topic) between two of one key. */
import {
  ORDERS_MAX_MESSAGE_BYTES,
  POISON_KINDS,
  POISON_PAD_BYTES,
  type PoisonKind,
  type ProducerCommand,
  type ProducerReport,
} from '../shared.ts'
import { log, type PhaseState, type ProducerProc, state } from '../state.ts'
import { newFault, pick } from './record.ts'

export async function injectPoison(phase: PhaseState): Promise<void> {
  const kind = POISON_KINDS[state.poisonCounter++ % POISON_KINDS.length] as PoisonKind
  const producer = pick(state.producers) as ProducerProc
  const committed = new Promise<{ r: Extract<ProducerReport, { type: 'poisoned' }>; at: number } | undefined>(
    (resolve) => {
      const timer = setTimeout(() => resolve(undefined), 15_000)
      state.bus.once('poisoned', (r, at) => {
        clearTimeout(timer)
        resolve({ r, at })
      })
    },
  )
  producer.child.send({ type: 'poison', kind } satisfies ProducerCommand)
  const result = await committed
  if (!result) {
    log(`!! ${phase.plan.mode}: ${kind} poison was not committed within 15 s`)
    return
  }
  const { r, at } = result
  const what =
    r.kind === 'too-large'
      ? `${Math.round(POISON_PAD_BYTES / 1024)} KiB on a ${ORDERS_MAX_MESSAGE_BYTES / 1024} KiB topic`
      : r.kind === 'missing-topic'
        ? `to '${r.topic}', never created (autoCreateTopics off)`
        : `row for '${r.topic}' inserted by SQL`
  const fault = newFault(
    phase,
    `poison-${r.kind}`,
    at,
    `${r.id}, ${what}, key ${r.key} between ${r.before} and ${r.after}`,
  )
  fault.deadLetteredMs = null
  state.poisonCommits.push({ at, id: r.id, topic: r.topic, kind: r.kind, fault })
  log(`${phase.plan.mode}: poison: ${fault.detail}`)
}
