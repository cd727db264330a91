/**
 * What the chaos runner needs from the database under test, so that the run itself (phases,
 * kills, Kafka faults, the checks) is the same on every database: chaos/db/postgres.ts,
 * chaos/db/mariadb.ts, chaos/db/sqlite.ts. The producer and relay processes have their own
 * per-database halves (producer-*.ts, relay-outbox.ts), loaded by name, so a child never loads
 * another database's driver.
 */
import type { FaultKind } from '../report.ts'
import type { RelayMode } from '../shared.ts'
import type { PhaseState } from '../state.ts'

export type ChaosDbKind = 'postgres' | 'mariadb' | 'sqlite'

export interface ChaosDatabase {
  readonly kind: ChaosDbKind
  /** Whether the run owns the server (and so may crash and restart it). */
  readonly owned: boolean
  /** The fault kind of a crash and restart (a required kind when the run owns the server). */
  readonly restartKind: FaultKind
  /** The relay modes its dialect accepts (a phase in another mode runs as 'single'). */
  readonly modes: readonly RelayMode[]
  /** Whether relays reach it over TCP (what --db-proxy needs). */
  readonly networked: boolean
  /** Whether relay sessions can be told apart and ended (the session faults). */
  readonly canEndSessions: boolean
  /** Its own server (unless --shared-db), the database or schema, the outbox tables, the business table. */
  start(): Promise<void>
  prepare(): Promise<void>
  /** What producers connect to; what relays connect to (before any proxy). */
  producerUrl(): string
  relayUrl(): string
  /** What the runner's outbox calls (migrate, stats, dead letters) take. */
  runnerConnection(): unknown
  /** The tracking ids of every business row that committed. */
  businessIds(): Promise<Set<string>>
  /** Rows left in the outbox table (the stats must agree). */
  outboxRows(): Promise<number>
  /** Ends every session of this run's relays; returns the session ids ended. */
  endRelaySessions(): Promise<{ ended: number[]; how: string }>
  /** The session holding the exclusive leader lock, if it is one of this run's relays. */
  leaderSession(): Promise<number | undefined>
  endSession(id: number): Promise<boolean>
  /** Crashes the server while producers commit, and starts it again after `downMs`. */
  restart(phase: PhaseState, downMs: number): Promise<void>
  /** One line for the report. */
  describe(): string
  /** Stops what the run started (keeps the data with --keep). */
  cleanup(keep: boolean): Promise<void>
}
