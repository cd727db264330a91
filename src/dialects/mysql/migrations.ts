import type { Migration, OutboxTable } from '../../core/seams.ts'
import { KEY_LOCK_SLOTS, qualified } from './names.ts'

/**
 * Forward-only migrations. Never edit a released one: add the next version instead, since
 * databases that already applied a version will not run it again.
 *
 * MySQL commits DDL implicitly, so a migration cannot be rolled back as a whole: every
 * statement must be safe to run again (IF NOT EXISTS, INSERT IGNORE), and a migration that was
 * interrupted half-way is simply re-run from its start, then recorded.
 */
export function mysqlMigrations(table: OutboxTable): Migration[] {
  const keyLocks = qualified(table, '_key_locks')
  const claimLocks = qualified(table, '_claim_locks')
  const digits = Array.from({ length: 16 }, (_, i) => `SELECT ${i} AS n`).join(' UNION ALL ')
  return [
    {
      version: 1,
      name: 'create outbox, dead letters, key and claim locks',
      statements: [
        // Timestamps are UTC: DATETIME has no time zone, and the session time zone of whoever
        // reads the table must not shift when a message becomes due. MySQL has no partial
        // indexes, so retry_hash stands in for PostgreSQL's `WHERE attempts > 0` index: it is NULL
        // (never matched) for messages that never failed, and the claim's "is an older message of
        // this key waiting for a retry?" probe reads only the key's failed rows, however long its
        // backlog. An index on (ordering_hash, attempts) would walk the whole backlog of the key.
        `CREATE TABLE IF NOT EXISTS ${qualified(table)} (
  id BIGINT NOT NULL AUTO_INCREMENT,
  topic VARCHAR(249) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  \`key\` LONGBLOB NULL,
  value LONGBLOB NULL,
  headers JSON NULL,
  ordering_hash INT NULL,
  attempts INT NOT NULL DEFAULT 0,
  available_at DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6)),
  created_at DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6)),
  last_error TEXT NULL,
  errors JSON NOT NULL DEFAULT (JSON_ARRAY()),
  retry_hash INT GENERATED ALWAYS AS (IF(attempts > 0, ordering_hash, NULL)) VIRTUAL,
  PRIMARY KEY (id),
  KEY \`${table.table}_retry_idx\` (retry_hash, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
        `CREATE TABLE IF NOT EXISTS ${qualified(table, '_dead_letters')} (
  id BIGINT NOT NULL AUTO_INCREMENT,
  message_id BIGINT NOT NULL,
  topic VARCHAR(249) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  \`key\` LONGBLOB NULL,
  value LONGBLOB NULL,
  headers JSON NULL,
  ordering_hash INT NULL,
  attempts INT NOT NULL,
  errors JSON NOT NULL,
  created_at DATETIME(6) NOT NULL,
  dead_at DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6)),
  PRIMARY KEY (id),
  KEY \`${table.table}_dead_letters_topic_idx\` (topic, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
        // Every slot exists up front, so producers (key locks) and concurrent relays (claim
        // locks) only ever lock existing rows; see insertStatements and claimSlotsSql.
        ...[keyLocks, claimLocks].flatMap((locks) => [
          `CREATE TABLE IF NOT EXISTS ${locks} (
  slot INT NOT NULL,
  PRIMARY KEY (slot)
) ENGINE=InnoDB`,
          `INSERT IGNORE INTO ${locks} (slot)
SELECT a.n + 16 * b.n + 256 * c.n + 4096 * d.n
FROM (${digits}) AS a CROSS JOIN (${digits}) AS b CROSS JOIN (${digits}) AS c CROSS JOIN (${digits}) AS d
WHERE a.n + 16 * b.n + 256 * c.n + 4096 * d.n < ${KEY_LOCK_SLOTS}`,
        ]),
      ],
    },
  ]
}
