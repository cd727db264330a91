// Effects exactly once under kill -9 AND a broker restart: the run of
// test/consumer-exactly-once.test.ts on a broker of its own (the shared test broker must stay up
// for the other files), stopped for a few seconds and started again on the same data dir while a
// consumer runs, with consumers killed before and after. At the end every counter is 1.
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { type KafkaBroker, startKafkaBroker } from '../scripts/kafka-broker.ts'
import { consume } from '../src/consumer/consume.ts'
import { defineTopic } from '../src/core/topic.ts'
import { freePorts } from '../src/dev/kafka/ports.ts'
import { type Database, killRepeatedly, mariadb, postgres, sqlite } from './consumer/exactly-once.ts'
import { createTopic, produceRaw, uniqueName, waitFor } from './consumer/kafka.ts'

const KILLS = 5
/** The third life sees the broker go down and come back before it is killed. */
const RESTART_DURING = [2]
const DOWN_MS = 4000

describe('outbox.consume(): effects exactly once under kill -9 and a broker restart', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'k-entity-consumer-restart-'))
  let broker: KafkaBroker | undefined
  let ports: { port: number; controllerPort: number }

  before(async () => {
    ports = await freePorts(2).then(([port, controllerPort]) => ({
      port: port as number,
      controllerPort: controllerPort as number,
    }))
    broker = await startKafkaBroker({ dataDir, ...ports, quiet: true })
  })
  after(async () => {
    await broker?.stop()
    rmSync(dataDir, { recursive: true, force: true })
  })

  const run = async (database: Database, staticMember: boolean) => {
    assert.ok(broker)
    const result = await killRepeatedly({
      database,
      brokers: [broker.brokers],
      staticMember,
      kills: KILLS,
      restart: {
        lives: RESTART_DURING,
        downMs: DOWN_MS,
        broker: {
          stop: async () => {
            await broker?.stop()
            broker = undefined
          },
          start: async () => {
            broker = await startKafkaBroker({ dataDir, ...ports, quiet: true })
          },
        },
      },
    })
    assert.equal(result.restarts, RESTART_DURING.length)
    assert.equal(result.resumedMs.length, RESTART_DURING.length, 'the consumer went on after each restart')
  }

  it('a consumer started while the broker is down joins once it is up', { timeout: 120_000 }, async () => {
    assert.ok(broker)
    const list = [broker.brokers]
    const name = uniqueName('ke-consume-late')
    await createTopic(list, name, 2)
    await broker.stop()
    broker = undefined
    const events = defineTopic<{ n: number }>({ name, key: (event) => String(event.n % 5) })
    const seen: number[] = []
    const errors: string[] = []
    const logger = {
      error: (_context: unknown, message?: string) => errors.push(String(message)),
      warn: () => {},
      info: () => {},
      debug: () => {},
    }
    const consumer = consume(events, {
      kafka: { brokers: list },
      groupId: uniqueName('late'),
      logger,
      maxWaitMs: 100,
      handler: async (message) => {
        seen.push((message.value as { n: number }).n)
      },
    })
    try {
      await waitFor(() => errors.length > 0, 60_000, 'a failed join while the broker is down')
      broker = await startKafkaBroker({ dataDir, ...ports, quiet: true })
      const messages = Array.from({ length: 50 }, (_, n) => ({
        key: String(n % 5),
        value: JSON.stringify({ n }),
      }))
      await produceRaw(list, name, messages)
      await waitFor(() => seen.length >= 50, 90_000, 'every message after the broker came up')
      assert.deepEqual(
        [...seen].sort((a, b) => a - b),
        messages.map((_, n) => n),
      )
      assert.ok(
        errors.every((error) => error.includes('could not join its group; retrying')),
        errors.join('; '),
      )
    } finally {
      await consumer.close()
    }
  })

  it('on PostgreSQL, a new group member per life', { timeout: 240_000 }, () => run(postgres, false))
  it('on MariaDB, a static group member', { timeout: 240_000 }, () => run(mariadb, true))
  // The SQLite lives share one database file; a new member per life, as the kill test without
  // a restart (test/consumer-exactly-once.test.ts) runs better-sqlite3 as a static one.
  it('on SQLite (better-sqlite3), a new group member per life', { timeout: 240_000 }, () =>
    run(sqlite, false),
  )
})
