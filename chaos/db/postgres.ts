/**
 * The chaos run on PostgreSQL (the default): its own server (initdb in a temp dir) or the shared
 * one (--shared-db), sessions told apart by application_name, crashes with `pg_ctl stop -m
 * immediate` while COMMITs are held (chaos/injectors/pg-restart.ts).
 */
import { rmSync } from 'node:fs'
import pg from 'pg'
import { leaderBackendPid, terminateBackend, terminateRelaySessions } from '../faults.ts'
import { injectPgRestart } from '../injectors/pg-restart.ts'
import { createCommitGate, startOwnPostgres } from '../setup.ts'
import type { RelayMode } from '../shared.ts'
import { outbox, type PhaseState, pgDir, relayApp, schema, state } from '../state.ts'
import type { ChaosDatabase } from './types.ts'

export class PostgresChaosDb implements ChaosDatabase {
  readonly kind = 'postgres'
  readonly restartKind = 'pg-restart'
  readonly modes: readonly RelayMode[] = ['single', 'exclusive', 'concurrent']
  readonly networked = true
  readonly canEndSessions = true
  readonly #shared: boolean

  constructor(shared: boolean) {
    this.#shared = shared
  }

  get owned(): boolean {
    return state.ownPg !== undefined
  }

  async start(): Promise<void> {
    if (!this.#shared) await startOwnPostgres()
  }

  async prepare(): Promise<void> {
    state.admin = new pg.Pool({ ...state.runnerConnection, max: 2 })
    state.admin.on('error', () => {})
    await outbox.migrate(state.runnerConnection)
    await state.admin.query(
      `CREATE TABLE "${schema}".business (id text PRIMARY KEY, topic text NOT NULL, key text NOT NULL)`,
    )
    if (state.ownPg) await createCommitGate()
  }

  producerUrl(): string {
    return state.databaseUrl
  }

  relayUrl(): string {
    return state.databaseUrl
  }

  runnerConnection(): unknown {
    return state.runnerConnection
  }

  async businessIds(): Promise<Set<string>> {
    const { rows } = await state.admin.query(`SELECT id FROM "${schema}".business`)
    return new Set(rows.map((row) => row.id as string))
  }

  async outboxRows(): Promise<number> {
    const { rows } = await state.admin.query(`SELECT count(*)::int AS n FROM "${schema}".outbox`)
    return rows[0]?.n as number
  }

  async endRelaySessions(): Promise<{ ended: number[]; how: string }> {
    const ended = await terminateRelaySessions(state.admin, relayApp)
    return { ended, how: `pg_terminate_backend (application_name ${relayApp})` }
  }

  leaderSession(): Promise<number | undefined> {
    return leaderBackendPid(state.admin, schema, relayApp)
  }

  endSession(id: number): Promise<boolean> {
    return terminateBackend(state.admin, id, relayApp)
  }

  restart(phase: PhaseState, downMs: number): Promise<void> {
    return injectPgRestart(phase, downMs)
  }

  describe(): string {
    return state.ownPg
      ? `own PostgreSQL 15 server (initdb in a temp dir, 127.0.0.1:${state.ownPg.port}, fsync on)`
      : `shared PostgreSQL at DATABASE_URL (no restarts)`
  }

  async cleanup(keep: boolean): Promise<void> {
    if (state.ownPg) {
      await state.admin?.end().catch(() => {})
      await state.ownPg.stop().catch((error: Error) => console.error(`stopping PostgreSQL: ${error.message}`))
      if (keep) console.error(`chaos: --keep: the database stays in ${state.ownPg.dataDir} (stopped)`)
      else rmSync(pgDir, { recursive: true, force: true })
      return
    }
    if (!keep) await state.admin?.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {})
    await state.admin?.end().catch(() => {})
  }
}
