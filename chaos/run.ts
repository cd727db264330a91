/**
 * `npm run chaos` (full) / `npm run chaos -- --short`: fault injection against the PostgreSQL
 * outbox (`--db mariadb`: MariaDB through the mysql2 adapter; `--db sqlite`: better-sqlite3),
 * proving no loss, no phantom, per-key order, bounded duplicates and exact dead letters.
 *
 *   node chaos/run.ts [--short | --medium] [--seed N] [--db postgres|mariadb|sqlite] [--keep]
 *                     [--trace FILE] [--shared-db] [--kafka-cluster] [--db-proxy] [--kafka-proxy]
 *                     [--clock-skew]  (--help tells each)
 *
 * Two producer processes write business rows and tracked messages continuously (15 % rolled back
 * on purpose, some bursts through produceMany, a poison message now and then: too large for its
 * topic, for a topic that does not exist, or a hand-written row for `__consumer_offsets`). Relay
 * processes run one mode per phase (single: 1, exclusive: 3, concurrent: 3) while the runner, at
 * seeded random moments, kills relays with SIGKILL (also right after Kafka acknowledged a batch and
 * before its delete), stops Kafka and brings it back, crashes PostgreSQL while producers commit and
 * starts it again, terminates the relays' PostgreSQL sessions and the exclusive leader's session.
 * Then producers stop, relays drain, every topic is read back and checked. The run owns its Kafka
 * broker (KAFKA_BROKERS is ignored: it stops and restarts it) and its PostgreSQL server (initdb in
 * a temp dir; `--shared-db` uses DATABASE_URL instead, without the restarts).
 * Issue 18's faults, each behind its flag: a three-broker cluster whose busiest leader is killed -9
 * during acknowledgements and restarted (then another), a TCP proxy between relays and PostgreSQL
 * that partitions, slows or resets their connections, the same between relays and Kafka, and
 * relays whose clock is 15 min off.
 * With --db mariadb the run owns a mariadbd instead (mariadb-install-db in a temp dir, SIGKILLed
 * while a producer session is in its COMMIT), and ends relay sessions with KILL CONNECTION: the
 * database-specific parts are chaos/db/{postgres,mariadb,sqlite}.ts and the children's halves
 * beside them. SQLite (short or medium): one WAL file, every phase one relay in mode single,
 * relay and consumer kills, the Kafka outage and poison only.
 * Exit code 0 only if every invariant holds. Results: printed, and JSON in chaos/results/.
 */

import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { startKafkaCluster } from '../scripts/kafka-broker.ts'
import { TcpProxy } from '../test/support/tcp-proxy.ts'
import { prepareConsumers, startConsumers, stopConsumers, waitForEffects } from './consumers.ts'
import { MariadbChaosDb } from './db/mariadb.ts'
import { PostgresChaosDb } from './db/postgres.ts'
import { SqliteChaosDb } from './db/sqlite.ts'
import { expectedEffects } from './effects.ts'
import { ChaosBroker, freePorts } from './faults.ts'
import { runPhase } from './phases.ts'
import { planPhases, schedule } from './plan.ts'
import { spawnProducer } from './producers.ts'
import { prepareRelays, stopRelays } from './relays.ts'
import { createTopics } from './setup.ts'
import type { ProducerCommand } from './shared.ts'
import { sleep } from './shared.ts'
import {
  claimSlots,
  clockSkew,
  consumerOn,
  dbKind,
  dbProxy,
  kafkaBrokers,
  kafkaCluster,
  kafkaProxy,
  keep,
  log,
  medium,
  outbox,
  type PhaseState,
  PRODUCERS,
  PROFILE,
  profileName,
  relayKafkaBrokers,
  runId,
  seed,
  sharedDb,
  short,
  state,
  tempDir,
  topicNames,
} from './state.ts'
import { verify } from './verify.ts'

async function main(): Promise<number> {
  const flags = [
    ...(short ? ['--short'] : medium ? ['--medium'] : []),
    `--seed ${seed}`,
    ...(dbKind === 'postgres' ? [] : [`--db ${dbKind}`]),
    ...(kafkaCluster ? ['--kafka-cluster'] : []),
    ...(dbProxy ? ['--db-proxy'] : []),
    ...(kafkaProxy ? ['--kafka-proxy'] : []),
    ...(clockSkew ? ['--clock-skew'] : []),
    ...(claimSlots === undefined ? [] : [`--claim-slots ${claimSlots}`]),
    ...(consumerOn ? [] : ['--no-consumer']),
  ]
  const command = `npm run chaos -- ${flags.join(' ')}`
  console.log(`chaos: ${profileName} run ${runId}, seed ${seed} (same plan again: ${command})`)
  state.db =
    dbKind === 'mariadb'
      ? new MariadbChaosDb(sharedDb)
      : dbKind === 'sqlite'
        ? new SqliteChaosDb()
        : new PostgresChaosDb(sharedDb)
  // A mode the database refuses (SQLite: only 'single') runs as one relay in mode 'single', with
  // the phase's other faults, so the plan (and the seed) stays the same.
  const plans = planPhases().map((plan) => {
    if (state.db.modes.includes(plan.mode)) return plan
    console.log(`  ${dbKind} refuses relay mode '${plan.mode}': that phase runs one relay in mode 'single'`)
    return { ...plan, mode: 'single' as const, relays: 1 }
  })
  const phases: PhaseState[] = plans.map((plan) => ({
    plan,
    steps: schedule(plan),
    active: false,
    spawned: 0,
    kills: 0,
    procs: [],
  }))
  for (const phase of phases)
    console.log(
      `  plan ${phase.plan.mode.padEnd(10)} ${phase.plan.seconds} s: ${phase.steps.map((s) => `${(s.at / 1000).toFixed(1)}s ${s.kill?.variant ?? s.kind}${s.kill && phase.plan.mode === 'exclusive' ? (s.kill.wantLeader ? '(leader)' : '(any)') : ''}`).join(', ')}`,
    )

  // Database and schema first; then the broker starts while the producers and every phase's first
  // relays load. They wait for 'go': a phase's relays start only once the previous phase's have exited.
  await state.db.start()
  await state.db.prepare()
  if (dbProxy && state.db.networked) {
    const target = new URL(state.db.relayUrl())
    const port = Number(target.port || (dbKind === 'mariadb' ? 3306 : 5432))
    state.dbProxy = await TcpProxy.start({ host: target.hostname, port })
    log(`relays reach the database through a TCP proxy on port ${state.dbProxy.port}`)
  }
  for (let i = 0; i < PRODUCERS; i++) spawnProducer(i)
  if (kafkaCluster) {
    // Its ports are known once it runs: the relays are forked after it (a slower start).
    const begin = Date.now()
    const targets = kafkaProxy ? await freePorts(3) : []
    state.kafkaProxies = await Promise.all(targets.map((port) => TcpProxy.start({ host: '127.0.0.1', port })))
    state.cluster = await startKafkaCluster({
      brokers: 3,
      quiet: true,
      ...(kafkaProxy
        ? {
            proxiedListeners: targets.map((port, i) => ({
              port,
              advertisedPort: (state.kafkaProxies[i] as TcpProxy).port,
            })),
          }
        : {}),
    })
    if (kafkaProxy)
      log(`relays reach Kafka through a TCP proxy per broker (${relayKafkaBrokers().join(',')})`)
    for (const phase of phases) prepareRelays(phase)
    log(`Kafka cluster of this run (3 brokers and a controller) ready in ${Date.now() - begin} ms`)
  } else {
    const [port, controllerPort, proxiedPort] = (await freePorts(3)) as [number, number, number]
    const proxy = kafkaProxy ? await TcpProxy.start({ host: '127.0.0.1', port: proxiedPort }) : undefined
    if (proxy) {
      state.kafkaProxies = [proxy]
      log(`relays reach Kafka through a TCP proxy on port ${proxy.port}`)
    }
    state.broker = new ChaosBroker(
      join(tempDir, 'kafka'),
      port,
      controllerPort,
      proxy && { port: proxiedPort, advertisedPort: proxy.port },
    )
    for (const phase of phases) prepareRelays(phase)
    await state.broker.start()
  }
  await createTopics(kafkaBrokers())
  log(`Kafka of this run at ${kafkaBrokers().join(',')}; topics ${topicNames.orders}, ${topicNames.payments}`)
  if (consumerOn) {
    await prepareConsumers()
    startConsumers()
  }

  await Promise.all(state.producers.map((p) => p.loaded))
  for (const producer of state.producers) producer.child.send({ type: 'go' } satisfies ProducerCommand)
  const progress = setInterval(() => {
    log(
      `progress: ${state.deliveredReported} delivered, ${state.sendFailures} failed sends, ${state.faults.length} faults`,
    )
  }, 15_000)

  for (const [i, phase] of phases.entries()) await runPhase(phase, phases[i + 1])
  const lastPhase = phases.at(-1) as PhaseState

  // Stop producing, let the last phase's relays drain the outbox.
  for (const producer of state.producers) producer.child.send({ type: 'stop' } satisfies ProducerCommand)
  const codes = await Promise.all(state.producers.map((p) => p.exited))
  log(`producers stopped (exit codes ${codes.join(', ')}); draining`)
  const drainStart = Date.now()
  let drainMs: number | null = null
  while (Date.now() - drainStart < PROFILE.drainTimeoutMs) {
    if ((await outbox.stats(state.db.runnerConnection())).pending === 0) {
      drainMs = Date.now() - drainStart
      break
    }
    await sleep(250)
  }
  clearInterval(progress)
  log(
    drainMs === null
      ? `!! outbox not drained after ${PROFILE.drainTimeoutMs} ms`
      : `drained in ${drainMs} ms`,
  )
  await stopRelays(lastPhase)
  // End to end: the consumers catch up with what was delivered, then close gracefully.
  let effectsMs: number | null = null
  if (consumerOn) {
    effectsMs = await waitForEffects(await expectedEffects(), 30_000, 180_000)
    log(effectsMs === null ? '!! effects incomplete' : `effects complete ${effectsMs} ms after the drain`)
    await stopConsumers()
  }
  return verify({ phases, codes, drainMs, command, effectsMs })
}

// ---------------------------------------------------------------------------------------------
// Cleanup: only what this run started.

let cleaned = false
async function cleanup(): Promise<void> {
  if (cleaned) return
  cleaned = true
  for (const proc of state.relays) if (proc.alive) proc.child.kill('SIGKILL')
  for (const producer of state.producers) if (producer.child.exitCode === null) producer.child.kill('SIGKILL')
  state.consumersStopping = true
  for (const consumer of state.consumers) if (consumer.alive) consumer.child.kill('SIGKILL')
  await state.broker?.stop().catch((error: Error) => console.error(`stopping Kafka: ${error.message}`))
  await state.cluster
    ?.stop()
    .catch((error: Error) => console.error(`stopping the Kafka cluster: ${error.message}`))
  await state.dbProxy?.close().catch(() => {})
  for (const proxy of state.kafkaProxies) await proxy.close().catch(() => {})
  rmSync(tempDir, { recursive: true, force: true })
  await state.db?.cleanup(keep)
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    console.error(`chaos: ${signal}, cleaning up`)
    void cleanup().finally(() => process.exit(130))
  })
}
const watchdog = setTimeout(() => {
  console.error(`chaos: watchdog: the run took longer than ${PROFILE.watchdogMs / 1000} s (seed ${seed})`)
  void cleanup().finally(() => process.exit(1))
}, PROFILE.watchdogMs)
watchdog.unref()
let exitCode = 1
try {
  exitCode = await main()
} catch (error) {
  console.error(
    `chaos: run failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
  )
  console.error(`chaos: seed ${seed}`)
} finally {
  await cleanup()
}
process.exit(exitCode)
