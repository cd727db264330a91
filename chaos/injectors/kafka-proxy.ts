/**
 * --kafka-proxy: the network between the relays and Kafka fails for PROXY_FAULT_MS, in turn as
 * `blackhole` (nothing forwarded, no close delivered: a send waits for its request timeout, and
 * those connections stay dead), `delay` (PROXY_DELAY_MS added to every chunk each way) and `drop`
 * (every connection reset, new ones refused), then forwards again. The broker advertises the
 * proxy's port on the listener the relays bootstrap from; the runner, producers and verifier use
 * the broker's own listener.
 */

import { living, waitUntil } from '../relays.ts'
import type { FaultKind } from '../report.ts'
import { sleep } from '../shared.ts'
import { log, type PhaseState, PROXY_DELAY_MS, PROXY_FAULT_MS, state, TARGET_TIMEOUT_MS } from '../state.ts'
import { backlog, newFault } from './record.ts'

/** Shifted by one from --db-proxy's turn, so in a phase with both the two links fail differently. */
const VARIANTS = ['delay', 'drop', 'blackhole'] as const

export async function injectKafkaProxy(phase: PhaseState): Promise<void> {
  const proxies = state.kafkaProxies
  if (proxies.length === 0) return
  const variant = VARIANTS[state.kafkaProxyFaultCounter++ % VARIANTS.length] as (typeof VARIANTS)[number]
  await waitUntil(() => living(phase).length > 0, TARGET_TIMEOUT_MS)
  const at = Date.now()
  const resets = () => proxies.reduce((sum, proxy) => sum + proxy.resets, 0)
  const resetsBefore = resets()
  // With a cluster, the relays' links to every broker fail at once (their host's network).
  for (const proxy of proxies) {
    if (variant === 'blackhole') proxy.blackhole()
    else if (variant === 'delay') proxy.delay(PROXY_DELAY_MS)
    else proxy.drop()
  }
  log(`${phase.plan.mode}: kafka-proxy-${variant} for ${PROXY_FAULT_MS / 1000} s`)
  try {
    await sleep(PROXY_FAULT_MS)
  } finally {
    for (const proxy of proxies) proxy.forward()
  }
  const healedAt = Date.now()
  const waiting = await backlog()
  const what =
    variant === 'blackhole'
      ? 'relay-Kafka connections partitioned (no byte forwarded, no close delivered; those connections stay dead)'
      : variant === 'delay'
        ? `${PROXY_DELAY_MS} ms added to every chunk each way between relays and Kafka`
        : `every relay-Kafka connection reset, new ones refused (${resets() - resetsBefore} connections)`
  const kind: FaultKind = `kafka-proxy-${variant}`
  const fault = newFault(
    phase,
    kind,
    at,
    `${what} for ${((healedAt - at) / 1000).toFixed(1)} s; ${waiting} messages waiting when it healed`,
  )
  // Recovery counts from the moment the network is healed. The relays' database sessions are
  // untouched, so an exclusive leader keeps leading: no takeover is expected.
  state.faultTimes.set(fault, { at: healedAt })
  log(`${phase.plan.mode}: ${kind}: ${fault.detail}`)
}
