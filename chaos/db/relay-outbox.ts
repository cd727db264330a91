/**
 * A relay process's database half: the outbox of the run's --db and where its relay connects.
 * PostgreSQL relays are told apart by application_name, MariaDB ones by the user name they
 * connect as (the run's own server skips grant tables); SQLite ones open the database file.
 * Loaded by name, so a relay process never loads another database's driver.
 */
import type { OutboxRelay, RelayOptions } from '../../src/core/relay.ts'
import type { MessageTransport } from '../../src/index.ts'
import { chaosTopics, type RelayConfig } from '../shared.ts'

export type ChaosRelayOptions = RelayOptions & { kafka: MessageTransport; claimSlots?: number }

export async function openRelay(config: RelayConfig, options: ChaosRelayOptions): Promise<OutboxRelay> {
  const topics = chaosTopics(config.topics)
  if (config.db === 'mariadb') {
    const { createMysqlOutbox } = await import('../../src/adapters/mysql2/index.ts')
    return createMysqlOutbox({ topics, schema: config.schema }).relay({
      ...options,
      connection: config.databaseUrl,
    })
  }
  if (config.db === 'sqlite') {
    const { createBetterSqliteOutbox } = await import('../../src/adapters/better-sqlite3/index.ts')
    return createBetterSqliteOutbox({ topics, schema: config.schema }).relay({
      ...options,
      connection: config.databaseUrl,
    })
  }
  const { createPgOutbox } = await import('../../src/adapters/pg/index.ts')
  return createPgOutbox({ topics, schema: config.schema }).relay({
    ...options,
    connection: { connectionString: config.databaseUrl, application_name: config.applicationName },
  })
}
