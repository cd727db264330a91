import { describe, invalidArgument } from '../../core/errors.ts'
import { type SqlDialect, type SqlRelayOptions, withSession } from '../../outbox/parts.ts'
import { endpointOf } from '../endpoint.ts'
import { checkedClaimTimeout, relayIdle } from '../relay-options.ts'
import { postgresDeadLetters, postgresStats } from './dead-letters.ts'
import { postgresInbox } from './inbox.ts'
import { postgresDialectFor } from './index.ts'
import { migrate, migrationScript } from './migrate.ts'
import { qualified } from './names.ts'
import { PostgresRelayStore } from './relay-store.ts'
import type { PgSession } from './session.ts'
import { isClaimSlotCount, MAX_CLAIM_SLOTS } from './sql.ts'
import { postgresStatus } from './status.ts'

/** PostgreSQL: every relay mode, pipelining on a companion session, LISTEN/NOTIFY. */
export const POSTGRES_CAPABILITIES = {
  modes: ['single', 'exclusive', 'concurrent'],
  pipeline: true,
  listen: true,
  synchronous: false,
  relayOptions: ['connection', 'claimTimeout', 'listen', 'leaderCheckInterval', 'claimSlots'],
} as const

/** Relay option `claimSlots`: only in concurrent mode, a power of two from 2 to `MAX_CLAIM_SLOTS`. */
function checkedClaimSlots(options: SqlRelayOptions): number | undefined {
  const { claimSlots } = options
  if (claimSlots === undefined) return undefined
  if (!isClaimSlotCount(claimSlots)) {
    throw invalidArgument(
      `relay option 'claimSlots' must be a power of two from 2 to ${MAX_CLAIM_SLOTS} (64 suits up to 16 relays), got ${describe(claimSlots)}`,
    )
  }
  if (options.mode !== 'concurrent') {
    throw invalidArgument(
      `relay option 'claimSlots' applies to mode 'concurrent' only (a single or exclusive relay takes no per-key locks); drop it, or use mode: 'concurrent'`,
    )
  }
  return claimSlots
}

/**
 * The PostgreSQL dialect part. `notifyEveryCommit`: a NOTIFY with every write, unspaced (see
 * `NotifySpacing`), for a database of one connection (PGlite) whose commits never wait for
 * each other's NOTIFY.
 */
export function postgresSql(notifyEveryCommit = false): SqlDialect<Promise<PgSession>> {
  return {
    qualified: (table) => qualified(table),
    migrate: (table, open) => withSession(open, (session) => migrate(session, table)),
    migrationScript,
    deadLetters: postgresDeadLetters,
    stats: postgresStats,
    status: (table, open, countCap) => postgresStatus(table, open, countCap),
    database: 'PostgreSQL',
    capabilities: POSTGRES_CAPABILITIES,
    refusals: {},
    producer: (options) => postgresDialectFor(options.notify !== false, notifyEveryCommit),
    relayStore(table, open, options: SqlRelayOptions) {
      const claimTimeout = checkedClaimTimeout(options)
      if (options.listen !== undefined && typeof options.listen !== 'boolean' && options.listen !== 'eager') {
        throw invalidArgument(
          `relay option 'listen' must be true, false or 'eager', got ${describe(options.listen)}`,
        )
      }
      const claimSlots = checkedClaimSlots(options)
      return new PostgresRelayStore({
        table,
        connect: open,
        claimTimeout,
        // Long enough that a healthy relay (which speaks at least once per interval) never hits it.
        sessionIdleTimeout: options.mode !== 'concurrent' ? Math.max(10_000, relayIdle(options) * 5) : 0,
        concurrent: options.mode === 'concurrent',
        claimSlots,
        listen: options.listen !== false,
        eagerClaims: options.listen === 'eager',
        // 'single' (the default) leads through the same lock as 'exclusive' (see RelayOptions.mode).
        exclusive: options.mode !== 'concurrent',
      })
    },
    endpoint: (target) => endpointOf(target, 5432),
    inbox: postgresInbox,
  }
}
