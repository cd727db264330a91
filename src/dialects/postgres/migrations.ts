import type { Migration, OutboxTable } from '../../core/seams.ts'
import { qualified } from './names.ts'

/**
 * Forward-only migrations. Never edit a released one: add the next version instead, since
 * databases that already applied a version will not run it again.
 */
export function postgresMigrations(table: OutboxTable): Migration[] {
  const outbox = qualified(table)
  const index = (name: string) => `"${table.table}_${name}"`
  return [
    {
      version: 1,
      name: 'create outbox',
      statements: [
        `CREATE TABLE ${outbox} (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  topic text NOT NULL,
  key bytea,
  value bytea,
  headers jsonb,
  ordering_hash integer,
  attempts integer NOT NULL DEFAULT 0,
  available_at timestamptz NOT NULL DEFAULT now(),
  created_at timestamptz NOT NULL DEFAULT now(),
  last_error text
)`,
        // Only rows that failed (attempts > 0) can be waiting for a retry, so this index is
        // normally empty: the claim's "is an older message of this key waiting?" probe costs one
        // look-up into an empty index instead of a walk over the key's whole backlog.
        `CREATE INDEX ${index('retry_idx')} ON ${outbox} (ordering_hash, id) WHERE attempts > 0`,
        // Rows are deleted as soon as Kafka acknowledges them; aggressive autovacuum keeps the
        // dead tuples of a delete-heavy queue from slowing the claim.
        `ALTER TABLE ${outbox} SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0)`,
      ],
    },
    {
      version: 2,
      name: 'error history and dead letters',
      statements: [
        `ALTER TABLE ${outbox} ADD COLUMN errors jsonb NOT NULL DEFAULT '[]'::jsonb`,
        `CREATE TABLE ${qualified(table, '_dead_letters')} (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  message_id bigint NOT NULL,
  topic text NOT NULL,
  key bytea,
  value bytea,
  headers jsonb,
  ordering_hash integer,
  attempts integer NOT NULL,
  errors jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  dead_at timestamptz NOT NULL DEFAULT now()
)`,
        `CREATE INDEX ${index('dead_letters_topic_idx')} ON ${qualified(table, '_dead_letters')} (topic, id)`,
      ],
    },
    {
      version: 3,
      name: 'parked rows',
      statements: [
        // The rows of a key waiting behind a retry, moved out of the claim's way (see parking.ts),
        // with their outbox ids: id order stays each key's order when they come back. The primary
        // key serves the claim's "a parked row of my key is older" probe and the moves of one key.
        `CREATE TABLE IF NOT EXISTS ${qualified(table, '_parked')} (
  id bigint NOT NULL,
  topic text NOT NULL,
  key bytea,
  value bytea,
  headers jsonb,
  ordering_hash integer NOT NULL,
  attempts integer NOT NULL,
  available_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL,
  last_error text,
  errors jsonb NOT NULL,
  PRIMARY KEY (ordering_hash, id)
)`,
        `ALTER TABLE ${qualified(table, '_parked')} SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0)`,
      ],
    },
  ]
}
