/**
 * --kafka-cluster: kill -9 of the broker that leads most of the run's partitions, at the moment a
 * relay reports that Kafka acknowledged a batch (acknowledgements under way), then its restart on
 * its own storage after PROFILE.outageMs. The next kill takes the busiest leader among the others.
 */
import { Admin } from '@platformatic/kafka'
import { onRelay } from '../relays.ts'
import { sleep } from '../shared.ts'
import { log, type PhaseState, PROFILE, state, TRIGGER_TIMEOUT_MS, topicNames } from '../state.ts'
import { backlog, newFault } from './record.ts'

/** Leader node id of every partition of the delivered topics. */
async function partitionLeaders(brokers: string[]): Promise<number[]> {
  const admin = new Admin({ clientId: 'k-entity-chaos-leaders', bootstrapBrokers: brokers })
  try {
    const topics = [topicNames.orders, topicNames.payments]
    const metadata = await admin.metadata({ topics, forceUpdate: true })
    return topics.flatMap((topic) => (metadata.topics.get(topic)?.partitions ?? []).map((p) => p.leader))
  } finally {
    await admin.close()
  }
}

export async function injectBrokerKill(phase: PhaseState): Promise<void> {
  const cluster = state.cluster
  if (!cluster) return
  const leaders = await partitionLeaders(cluster.brokers)
  const led = new Map<number, number>()
  for (const leader of leaders)
    if (leader !== state.lastKilledBroker) led.set(leader, (led.get(leader) ?? 0) + 1)
  const [victim, leading] = [...led.entries()].sort((a, b) => b[1] - a[1])[0] ?? []
  if (victim === undefined || leading === undefined) {
    throw new Error(`no broker to kill: partition leaders ${JSON.stringify(leaders)}`)
  }
  // Armed on the next acknowledgement a relay of this phase reports: the signal goes out from
  // its handler, before any later report is read.
  let killing: Promise<void> | undefined
  let at = 0
  const kill = () => {
    at = Date.now()
    killing = cluster.kill(victim, 'SIGKILL')
  }
  const hit = await onRelay((p, r) => p.phase === phase && r.type === 'sent', TRIGGER_TIMEOUT_MS, kill)
  if (!killing) kill()
  await killing
  state.lastKilledBroker = victim
  const goneAt = Date.now()
  log(
    `${phase.plan.mode}: kafka-broker-kill: broker ${victim} (leader of ${leading}/${leaders.length} partitions) killed${hit ? ' on an acknowledgement' : ''}; down for ${PROFILE.outageMs / 1000} s`,
  )
  await sleep(PROFILE.outageMs)
  const restartAt = Date.now()
  await cluster.restart(victim)
  const upAt = Date.now()
  const waiting = await backlog()
  const fault = newFault(
    phase,
    'kafka-broker-kill',
    at,
    `kill -9 of broker ${victim}, leader of ${leading} of ${leaders.length} partitions (leaders ${leaders.join(',')}), ${hit ? "on a relay's 'sent' report" : `no acknowledgement within ${TRIGGER_TIMEOUT_MS} ms, killed anyway`}; gone in ${goneAt - at} ms, down ${((restartAt - goneAt) / 1000).toFixed(1)} s, back with every broker in ${((upAt - restartAt) / 1000).toFixed(1)} s; ${waiting} messages waiting then`,
  )
  log(`${phase.plan.mode}: kafka-broker-kill: ${fault.detail}`)
}
