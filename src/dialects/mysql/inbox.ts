import { databaseCodes, type InboxSql, inboxScript, purgeInBatches } from '../../consumer/inbox-sql.ts'
import { errorChain } from '../../core/error-chain.ts'
import { internalError } from '../../core/errors.ts'
import type { OutboxTable } from '../../core/seams.ts'
import { withSession } from '../../outbox/parts.ts'
import { encodeHeaders } from '../shared/stored-columns.ts'
import { qualified } from './names.ts'
import type { MysqlSession } from './session.ts'

const ER_DUP_ENTRY = 1062

function statements(table: OutboxTable): string[] {
  return [
    `CREATE DATABASE IF NOT EXISTS \`${table.schema}\``,
    `CREATE TABLE IF NOT EXISTS ${qualified(table, '_inbox')} (
  consumer_group VARCHAR(249) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  message_key VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  topic VARCHAR(249) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  \`partition\` INT NOT NULL,
  \`offset\` BIGINT NOT NULL,
  processed_at DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6)),
  expires_at DATETIME(6) NOT NULL,
  PRIMARY KEY (consumer_group, message_key),
  KEY \`${table.table}_inbox_expires_idx\` (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
    `CREATE TABLE IF NOT EXISTS ${qualified(table, '_consumer_dead_letters')} (
  id BIGINT NOT NULL AUTO_INCREMENT,
  consumer_group VARCHAR(249) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  topic VARCHAR(249) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  \`partition\` INT NOT NULL,
  \`offset\` BIGINT NOT NULL,
  \`key\` LONGBLOB NULL,
  value LONGBLOB NULL,
  headers JSON NULL,
  error TEXT NOT NULL,
  attempts INT NOT NULL,
  dead_at DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6)),
  PRIMARY KEY (id),
  KEY \`${table.table}_consumer_dead_letters_group_idx\` (consumer_group, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
  ]
}

export const mysqlInbox: InboxSql<Promise<MysqlSession>> = {
  insert: (table, entry) => ({
    text: `INSERT INTO ${qualified(table, '_inbox')} (consumer_group, message_key, topic, \`partition\`, \`offset\`, expires_at)
VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6) + INTERVAL (? * 1000) MICROSECOND)`,
    values: [entry.group, entry.key, entry.topic, entry.partition, String(entry.offset), entry.retentionMs],
  }),
  insertMany: (table, entries, recurring) => {
    if (entries.length === 0) throw internalError('mysqlInbox.insertMany() got no entries')
    const values: unknown[] = []
    for (const entry of entries) {
      values.push(
        entry.group,
        entry.key,
        entry.topic,
        entry.partition,
        String(entry.offset),
        entry.retentionMs,
      )
    }
    const row = '(?, ?, ?, ?, ?, UTC_TIMESTAMP(6) + INTERVAL (? * 1000) MICROSECOND)'
    const text = `INSERT INTO ${qualified(table, '_inbox')} (consumer_group, message_key, topic, \`partition\`, \`offset\`, expires_at)
VALUES ${Array.from(entries, () => row).join(',\n')}`
    // A full batch's statement recurs on every connection: prepared once per connection, it is
    // not parsed again and its values go in binary (on MariaDB 10.11 the INSERT took 12-35% less
    // time without Kafka, bench/mysql-inbox-insert.ts; 9% less in the consumer, a median of 10
    // alternating pairs with a wide spread, bench/consumer-phases.ts). Only the full size: one
    // prepared statement per connection and batch size, not one per size a batch happened to
    // have, since the server bounds them for all its clients together (max_prepared_stmt_count).
    return recurring === true ? { text, values, name: `ke_inbox_${entries.length}` } : { text, values }
  },
  deadLetter: (table, dead) => {
    const headers = encodeHeaders([...dead.headers])
    return {
      text: `INSERT INTO ${qualified(table, '_consumer_dead_letters')} (consumer_group, topic, \`partition\`, \`offset\`, \`key\`, value, headers, error, attempts)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      values: [
        dead.group,
        dead.topic,
        dead.partition,
        String(dead.offset),
        dead.key,
        dead.value,
        headers,
        dead.error,
        dead.attempts,
      ],
    }
  },
  purgeBatch: (table, limit) => ({
    text: `DELETE FROM ${qualified(table, '_inbox')} WHERE expires_at < UTC_TIMESTAMP(6) LIMIT ${Math.trunc(limit)}`,
    values: [],
  }),
  isDuplicate: (error) =>
    errorChain(error).some((link) => {
      const codes = databaseCodes(link)
      return codes.includes(String(ER_DUP_ENTRY)) || codes.includes('ER_DUP_ENTRY')
    }),
  migrate: (table, open) =>
    withSession(open, async (session) => {
      for (const statement of statements(table)) await session.query(statement)
    }),
  script: (table) => inboxScript(statements(table)),
  purge: (table, open, batchSize) =>
    withSession(open, (session) =>
      purgeInBatches(
        batchSize,
        async () => (await session.query(mysqlInbox.purgeBatch(table, batchSize).text)).affectedRows,
      ),
    ),
}
