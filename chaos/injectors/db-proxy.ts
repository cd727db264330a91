/**
 * --db-proxy: the network between the relays and the database fails for PROXY_FAULT_MS, in turn as
 * `blackhole` (nothing forwarded, no close delivered: connections open then stay dead, the relay
 * must notice on its own), `delay` (PROXY_DELAY_MS added to every chunk each way) and `drop`
 * (every connection reset, new ones refused), then forwards again. Producers and the runner
 * reach the server directly.
 */

import { living, waitUntil } from '../relays.ts'
import type { FaultKind } from '../report.ts'
import { sleep } from '../shared.ts'
import { log, type PhaseState, PROXY_DELAY_MS, PROXY_FAULT_MS, state, TARGET_TIMEOUT_MS } from '../state.ts'
import { newFault } from './record.ts'

const VARIANTS = ['blackhole', 'delay', 'drop'] as const

export async function injectDbProxy(phase: PhaseState): Promise<void> {
  const proxy = state.dbProxy
  if (!proxy) return
  const variant = VARIANTS[state.proxyFaultCounter++ % VARIANTS.length] as (typeof VARIANTS)[number]
  await waitUntil(() => living(phase).length > 0, TARGET_TIMEOUT_MS)
  const at = Date.now()
  if (variant === 'blackhole') proxy.blackhole()
  else if (variant === 'delay') proxy.delay(PROXY_DELAY_MS)
  else proxy.drop()
  log(`${phase.plan.mode}: db-proxy-${variant} for ${PROXY_FAULT_MS / 1000} s`)
  await sleep(PROXY_FAULT_MS)
  proxy.forward()
  const healedAt = Date.now()
  const what =
    variant === 'blackhole'
      ? 'relay connections partitioned (no byte forwarded, no close delivered; those connections stay dead)'
      : variant === 'delay'
        ? `${PROXY_DELAY_MS} ms added to every chunk each way`
        : 'every relay connection reset, new ones refused'
  const kind: FaultKind = `db-proxy-${variant}`
  const fault = newFault(phase, kind, at, `${what} for ${((healedAt - at) / 1000).toFixed(1)} s`)
  // Recovery counts from the moment the network is healed. A partition or a reset ends the
  // exclusive leader's session: a leader again is expected (latency alone need not change it).
  state.faultTimes.set(fault, { at: healedAt })
  if (phase.plan.mode === 'exclusive' && variant !== 'delay') fault.takeoverMs = null
  log(`${phase.plan.mode}: ${kind}: ${fault.detail}`)
}
