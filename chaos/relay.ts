/**
 * A relay process of the chaos run. Reports every relay event to the runner over IPC, and wraps
 * the Kafka transport to report 'sending' (with the tracking ids of the batch) before each
 * produce call and 'sent' / 'send-failed' after it.
 *
 * Runner commands: { type: 'hold', at } makes the next send pause `holdMs` at a hold point,
 * reported with held: true, so that the runner's kill -9 lands exactly there: 'before-send'
 * (batch claimed, Kafka not called yet; on 'sending') or 'after-ack' (Kafka acknowledged the
 * batch, the relay has not deleted it yet; on 'sent'). { type: 'disarm' }; { type: 'go' } starts a
 * pre-started process's relay; { type: 'stop' } stops the relay gracefully and exits.
 */
import type { MessageTransport, OutboxRecord } from '../src/index.ts'
import { readTracking } from '../src/testing/index.ts'
import { KafkaTransport } from '../src/transports/kafka/index.ts'
import { openRelay } from './db/relay-outbox.ts'
import {
  env,
  type HoldPoint,
  type RelayCommand,
  type RelayConfig,
  type RelayReport,
  sleep,
  waitForGo,
} from './shared.ts'

const config = JSON.parse(env('CHAOS_RELAY')) as RelayConfig
const pid = process.pid
const report = (message: RelayReport) => {
  if (process.connected) process.send?.(message)
}

// Explicitly off (the default): a send to the never-created `missing` topic must fail, not create it.
const kafka = new KafkaTransport({
  brokers: config.brokers,
  requestTimeout: 3000,
  retries: 2,
  autoCreateTopics: false,
})
let hold: HoldPoint | undefined
let sabotage = config.sabotage
const transport: MessageTransport = {
  async send(input: readonly OutboxRecord[]) {
    const records = sabotage ? sabotaged(input) : input
    const before = hold === 'before-send'
    if (before) hold = undefined
    report({
      type: 'sending',
      pid,
      ids: records.map((r) => readTracking(r.headers)?.id ?? '?'),
      held: before,
    })
    // Claimed (rows locked by our open transaction), nothing sent: the runner kills us here.
    if (before) await sleep(config.holdMs)
    // A rejection may say per record what Kafka did not take; the rest of the batch was written.
    let failed: { index: number; error?: unknown }[] = []
    let rejection: unknown
    try {
      await kafka.send(records)
    } catch (error) {
      const partial = (error as { failed?: { index: number; error?: unknown }[] }).failed
      if (!Array.isArray(partial) || partial.length >= records.length) {
        report({ type: 'send-failed', pid, count: records.length, message: (error as Error).message })
        throw error
      }
      failed = partial
      rejection = error
    }
    if (failed.length > 0) {
      report({
        type: 'send-partial',
        pid,
        count: records.length,
        failed: failed.map((f) => readTracking(records[f.index]?.headers ?? [])?.id ?? '?'),
        message: String((failed[0]?.error as Error)?.message ?? failed[0]?.error).slice(0, 300),
      })
    }
    const held = hold === 'after-ack'
    if (held) hold = undefined
    report({ type: 'sent', pid, count: records.length, held })
    // Kafka has the batch; the relay has not deleted it yet. The runner kills us during this pause.
    if (held) await sleep(config.holdMs)
    if (rejection !== undefined) throw rejection
  },
  close: () => kafka.close(),
}

const relay = await openRelay(config, {
  kafka: transport,
  mode: config.mode,
  ...(config.claimSlots === undefined ? {} : { claimSlots: config.claimSlots }),
  pollingInterval: 100,
  leaderCheckInterval: 200,
  maxMessagesPerPoll: config.maxMessagesPerPoll,
  retryBackoff: { initial: 100, max: 2000 },
  onEvent: (event) => {
    switch (event.type) {
      case 'delivered':
        report({ type: 'delivered', pid, count: event.count, durationMs: Math.round(event.durationMs) })
        break
      case 'message-failed':
        report({
          type: 'message-failed',
          pid,
          id: event.id,
          topic: event.topic,
          deadLettered: event.deadLettered,
          error: event.error.slice(0, 300),
        })
        break
      case 'leadership':
        report({ type: 'leadership', pid, leader: event.leader })
        break
      case 'held':
        report({ type: 'held', pid, count: event.ids.length, error: event.error.slice(0, 300) })
        break
      case 'error':
        report({
          type: 'error',
          pid,
          stage: event.stage,
          message: String((event.error as Error)?.message ?? event.error).slice(0, 300),
          retryInMs: event.retryInMs,
        })
        break
    }
  },
})

let stopping = false
async function stop(): Promise<void> {
  if (stopping) return
  stopping = true
  await relay.stop({ timeout: 5000 })
  process.exit(0)
}

/** Only for `--sabotage`: the defects the suite must catch. Each happens once per relay process. */
function sabotaged(records: readonly OutboxRecord[]): readonly OutboxRecord[] {
  if (sabotage === 'drop' && records.length >= 2) {
    sabotage = undefined
    return records.slice(0, -1)
  }
  if (sabotage === 'reorder') {
    for (let i = 0; i < records.length; i++) {
      const j = records.findIndex((r, k) => k > i && r.key !== null && records[i]?.key?.equals(r.key))
      if (j < 0) continue
      sabotage = undefined
      const swapped = [...records]
      ;[swapped[i], swapped[j]] = [records[j] as OutboxRecord, records[i] as OutboxRecord]
      return swapped
    }
  }
  return records
}

process.on('message', (message: RelayCommand) => {
  if (message.type === 'hold') hold = message.at
  if (message.type === 'disarm') hold = undefined
  if (message.type === 'stop') void stop()
})
process.on('disconnect', () => void stop())

report({ type: 'loaded', pid })
await waitForGo(config.waitForGo)
if (!stopping) {
  await relay.start()
  report({ type: 'started', pid })
}
