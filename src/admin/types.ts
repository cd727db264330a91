/**
 * What operators' tools (the CLI, the dashboard, metrics) read and do, without a topics map:
 * a tool that only knows the database and the outbox table must not have to invent topics.
 * Implemented once over the dialect parts (see `../outbox/parts.ts`), like `SqlOutbox`.
 */
import type { DeadLetters } from '../core/dead-letters.ts'
import type { NodeMode } from '../core/relay.ts'
import type { MigrationResult } from '../outbox/parts.ts'

/** Queue figures of one topic. */
export interface TopicStatus {
  topic: string
  /** Waiting to be sent, retrying ones included. */
  pending: number
  /** Of those, sendable now (not waiting for a retry time). */
  ready: number
  /** Failed at least once and waiting for their retry time. */
  retrying: number
  deadLetters: number
  /** Age of this topic's oldest pending message in ms (0 when none), by the database clock. */
  oldestPendingMs: number
}

/** A relay session the database can see (PostgreSQL and MySQL name sessions after their purpose). */
export interface RelayNodeStatus {
  /** The session's name as the database shows it (application name / lock name). */
  name: string
  mode: NodeMode | 'unknown'
  /** Holds the leader lock (`single`/`exclusive`), claims on its own (`concurrent`), or stands by. */
  role: 'leader' | 'standby' | 'concurrent' | 'unknown'
  /** Client address as the database saw it, never credentials. */
  client?: string
  since?: Date
}

export interface OutboxStatus {
  /** When the figures were read, by the database clock. */
  at: Date
  pending: number
  ready: number
  retrying: number
  deadLetters: number
  oldestPendingMs: number
  /**
   * False when `pending` (and the topics' counts) are above `countCap` and come from the planner's
   * estimate: reading a status must stay cheap with millions of rows waiting.
   */
  exact: boolean
  topics: TopicStatus[]
  /** Empty where the database cannot show other sessions (SQLite, PGlite). */
  relays: RelayNodeStatus[]
}

export interface StatusOptions {
  /** Counts stop being exact above this many pending rows (default 100,000). */
  countCap?: number
}

/** The admin part of one outbox table. Every call uses its own short session. */
export interface OutboxAdmin {
  /** The database as error messages name it ('PostgreSQL', 'MySQL/MariaDB', 'SQLite', 'PGlite'). */
  readonly database: string
  status(options?: StatusOptions): Promise<OutboxStatus>
  readonly deadLetters: DeadLetters
  migrate(): Promise<MigrationResult>
  migrationSql(): string
  /** Ends whatever the admin opened (pools, files). */
  close(): Promise<void>
}
