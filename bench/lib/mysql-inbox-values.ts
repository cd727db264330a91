// The MariaDB/MySQL inbox batch INSERT as it was before the JSON_TABLE form: a VALUES row of six
// placeholders per entry. Kept for the side-by-side comparisons in bench/consumer-phases.ts and
// bench/mysql-inbox-insert.ts.
import type { InboxEntry } from '../../src/consumer/inbox-sql.ts'
import type { OutboxTable, SqlStatement } from '../../src/core/seams.ts'
import { qualified } from '../../src/dialects/mysql/names.ts'

export function insertManyValues(table: OutboxTable, entries: readonly InboxEntry[]): SqlStatement {
  const values: unknown[] = []
  for (const entry of entries) {
    values.push(entry.group, entry.key, entry.topic, entry.partition, String(entry.offset), entry.retentionMs)
  }
  const row = '(?, ?, ?, ?, ?, UTC_TIMESTAMP(6) + INTERVAL (? * 1000) MICROSECOND)'
  return {
    text: `INSERT INTO ${qualified(table, '_inbox')} (consumer_group, message_key, topic, \`partition\`, \`offset\`, expires_at)
VALUES ${Array.from(entries, () => row).join(',\n')}`,
    values,
  }
}
