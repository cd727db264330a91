import type { EntityManager } from '@mikro-orm/core'
import { invalidArgument, type KEntityError } from '../../core/errors.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import { assertInTransactionBySavepoint } from '../../dialects/mysql/savepoint-probe.ts'
import { errorNumber } from '../../dialects/mysql/session.ts'
import { transactionError } from '../../dialects/postgres/transaction.ts'
import type { SqlDatabase } from '../data-layer.ts'
import {
  checkEntityManager,
  mikroOrmDatabase,
  openTransaction,
  platformName,
  rawQuery,
} from './transaction-context.ts'

const HINT = 'use the em passed to em.transactional(async (em) => ...) (or outbox.transaction(em, fn))'

/**
 * The MikroORM transaction binding on `database`: wraps the EntityManager MikroORM hands to
 * `em.transactional(async (em) => ...)`, checked to run on that database's driver.
 *
 * Messages are written at once, on the connection of the open transaction (the Kysely
 * transaction MikroORM keeps as its context, which hands the statement and its values to the
 * driver unchanged), rather than staged and written by a flush hook: the transaction commits
 * only after `transactional()` flushed the entities on that same connection, so a failing flush
 * rolls the messages back with everything else, while writing immediately takes each key's
 * ordering lock at produce time and reports a bad message (or a missing outbox table) at the
 * `produce()` call that caused it. A flush hook would also write messages in whatever
 * transaction a later flush happens to use.
 */
export function mikroOrmTransaction(
  em: EntityManager,
  database: SqlDatabase = 'postgres',
): TransactionAdapter {
  checkEntityManager(em)
  const found = mikroOrmDatabase(em)
  if (database === 'postgres') {
    if (found !== 'postgres') throw notPostgres(em, found)
    return postgresBinding(em)
  }
  if (found !== 'mysql') throw notMysql(platformName(em))
  return mysqlBinding(em)
}

function postgresBinding(em: EntityManager): TransactionAdapter {
  return {
    dialect: 'postgres',
    assertInTransaction() {
      openTransaction(em)
    },
    async execute(statement: SqlStatement) {
      const transaction = openTransaction(em)
      try {
        await transaction.executeQuery(rawQuery(statement))
      } catch (error) {
        throw transactionError(error) ?? error
      }
    },
  }
}

/**
 * MySQL/MariaDB: MikroORM's own state must show the transaction open, and so must the server
 * (`assertInTransactionBySavepoint`: Kysely keeps the OK packet's status flags to itself), which
 * also catches a transaction the server ended on its own, such as a deadlock victim's.
 */
function mysqlBinding(em: EntityManager): TransactionAdapter {
  return {
    dialect: 'mysql',
    async assertInTransaction() {
      const transaction = openTransaction(em)
      await assertInTransactionBySavepoint(
        transaction,
        (sql) => transaction.executeQuery(rawQuery({ text: sql, values: [] })),
        errorNumber,
        HINT,
      )
    },
    async execute(statement: SqlStatement) {
      await openTransaction(em).executeQuery(rawQuery(statement))
    },
  }
}

export function notPostgres(em: EntityManager, found: SqlDatabase | undefined): KEntityError {
  return invalidArgument(
    `this outbox needs MikroORM's PostgreSQL driver (@mikro-orm/postgresql), this EntityManager uses ${platformName(em)}; ${
      found === 'mysql'
        ? 'pass the MikroORM instance (or orm.em) as `db` to createMikroOrmOutbox, which then speaks MySQL, or use k-entity/mikro-orm/mysql'
        : "k-entity's MikroORM adapter covers @mikro-orm/postgresql and @mikro-orm/mysql (or @mikro-orm/mariadb)"
    }`,
  )
}

export function notMysql(platform: string): KEntityError {
  return invalidArgument(
    `this outbox needs MikroORM's MySQL driver (@mikro-orm/mysql or @mikro-orm/mariadb), this EntityManager uses ${platform}; ${
      platform.startsWith('PostgreSql')
        ? 'use k-entity/mikro-orm (createMikroOrmOutbox) for PostgreSQL'
        : "k-entity's MikroORM adapter covers @mikro-orm/postgresql and @mikro-orm/mysql (or @mikro-orm/mariadb)"
    }`,
  )
}
