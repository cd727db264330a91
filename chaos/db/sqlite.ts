/**
 * The chaos run on SQLite through the better-sqlite3 adapter (--db sqlite, short or medium): one
 * database file in WAL mode, written by the producer processes, the relay process and the consumer
 * processes (their inbox and effects), each with its own handle. SQLite relays only in mode
 * 'single' (the dialect refuses the others), so every phase runs one relay; there is no server to
 * crash and no session to end, so the faults are relay kills (in every variant), consumer kills,
 * the Kafka outage and the poison messages.
 */
import { mkdirSync, rmSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import type { RelayMode } from '../shared.ts'
import { log, outbox, type PhaseState, runId, schema } from '../state.ts'
import type { ChaosDatabase } from './types.ts'

export class SqliteChaosDb implements ChaosDatabase {
  readonly kind = 'sqlite'
  readonly restartKind = 'db-restart'
  readonly owned = false
  readonly canEndSessions = false
  readonly networked = false
  readonly modes: readonly RelayMode[] = ['single']
  readonly #dir = join(os.tmpdir(), `k-entity-chaos-${runId}-sqlite`)
  readonly #file = join(this.#dir, 'chaos.db')
  #db: Database.Database | undefined

  async start(): Promise<void> {
    mkdirSync(this.#dir, { recursive: true })
  }

  async prepare(): Promise<void> {
    const db = new Database(this.#file)
    this.#db = db
    // Readers (the relay's claim) and the writers do not block each other; persistent in the file.
    db.pragma('journal_mode = WAL')
    await outbox.migrate(db)
    db.exec(`CREATE TABLE business (id TEXT PRIMARY KEY, topic TEXT NOT NULL, key TEXT NOT NULL)`)
    log(`SQLite database ${this.#file} (WAL), outbox tables prefixed ${schema}_`)
  }

  producerUrl(): string {
    return this.#file
  }

  relayUrl(): string {
    return this.#file
  }

  runnerConnection(): unknown {
    return this.#file
  }

  get #handle(): Database.Database {
    if (!this.#db) throw new Error('SQLite database not open')
    return this.#db
  }

  async businessIds(): Promise<Set<string>> {
    const rows = this.#handle.prepare('SELECT id FROM business').all() as { id: string }[]
    return new Set(rows.map((row) => row.id))
  }

  async outboxRows(): Promise<number> {
    const row = this.#handle.prepare(`SELECT count(*) AS n FROM "${schema}_outbox"`).get() as { n: number }
    return row.n
  }

  async endRelaySessions(): Promise<{ ended: number[]; how: string }> {
    return { ended: [], how: 'none (SQLite has no sessions)' }
  }

  async leaderSession(): Promise<number | undefined> {
    return undefined
  }

  async endSession(): Promise<boolean> {
    return false
  }

  async restart(phase: PhaseState): Promise<void> {
    log(`${phase.plan.mode}: SQLite has no server to crash: restart skipped`)
  }

  describe(): string {
    return `SQLite file in WAL mode (better-sqlite3 adapter), producers and the relay in separate processes`
  }

  async cleanup(keep: boolean): Promise<void> {
    this.#db?.close()
    if (keep) console.error(`chaos: --keep: the database stays in ${this.#file}`)
    else rmSync(this.#dir, { recursive: true, force: true })
  }
}
