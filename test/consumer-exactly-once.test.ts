// Effects exactly once under kill -9: a consumer in a child process increments a counter row per
// message inside its inbox transaction and is SIGKILLed again and again while messages flow; at
// the end every counter is 1, although Kafka redelivered what the killed members had not
// committed (and the producer sent some messages twice, as a relay may). PostgreSQL, MariaDB and
// SQLite (better-sqlite3 and node:sqlite, a database file the lives share).
// The same run with broker restarts: test/consumer-broker-restart.test.ts.
import { describe, it } from 'node:test'
import { killRepeatedly, mariadb, nodeSqlite, postgres, sqlite } from './consumer/exactly-once.ts'
import { brokers } from './consumer/kafka.ts'

const list = brokers()
const KILLS = 6

describe('outbox.consume(): effects exactly once under kill -9', {
  skip: list === undefined ? 'KAFKA_BROKERS not set' : false,
}, () => {
  it('on PostgreSQL, a new group member per restart', { timeout: 180_000 }, async () => {
    await killRepeatedly({ database: postgres, brokers: list as string[], staticMember: false, kills: KILLS })
  })
  it('on MariaDB, a static group member', { timeout: 180_000 }, async () => {
    await killRepeatedly({ database: mariadb, brokers: list as string[], staticMember: true, kills: KILLS })
  })
  it('on SQLite (better-sqlite3), a static group member', { timeout: 180_000 }, async () => {
    await killRepeatedly({ database: sqlite, brokers: list as string[], staticMember: true, kills: KILLS })
  })
  it('on SQLite (node:sqlite), a new group member per restart', { timeout: 180_000 }, async () => {
    await killRepeatedly({
      database: nodeSqlite,
      brokers: list as string[],
      staticMember: false,
      kills: KILLS,
    })
  })
})
