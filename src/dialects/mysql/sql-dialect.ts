import { type SqlDialect, withSession } from '../../outbox/parts.ts'
import { endpointOf } from '../endpoint.ts'
import { checkedClaimTimeout, relayIdle } from '../relay-options.ts'
import { mysqlDeadLetters, mysqlStats } from './dead-letters.ts'
import { mysqlInbox } from './inbox.ts'
import { mysqlDialect } from './index.ts'
import { migrate, migrationScript } from './migrate.ts'
import { qualified } from './names.ts'
import { MysqlRelayStore } from './relay-store.ts'
import { type MysqlSession, relaySilence } from './session.ts'
import { mysqlStatus } from './status.ts'

/**
 * MySQL 8 / MariaDB 10.6+: every relay mode (named locks bound to the session), pipelining on a
 * companion session; no commit notifications.
 */
export const mysqlSql: SqlDialect<Promise<MysqlSession>> = {
  database: 'MySQL/MariaDB',
  capabilities: {
    modes: ['single', 'exclusive', 'concurrent'],
    pipeline: true,
    listen: false,
    synchronous: false,
    relayOptions: ['connection', 'claimTimeout', 'leaderCheckInterval'],
  },
  refusals: {},
  producer: () => mysqlDialect,
  qualified: (table) => qualified(table),
  migrate: (table, open) => withSession(open, (session) => migrate(session, table)),
  migrationScript,
  deadLetters: mysqlDeadLetters,
  stats: mysqlStats,
  status: mysqlStatus,
  relayStore(table, open, options) {
    const claimTimeout = checkedClaimTimeout(options)
    return new MysqlRelayStore({
      table,
      connect: open,
      sessionTimeout: relaySilence(claimTimeout, relayIdle(options)),
      claimTimeout,
      concurrent: options.mode === 'concurrent',
    })
  },
  endpoint: (target) => endpointOf(target, 3306),
  inbox: mysqlInbox,
}
