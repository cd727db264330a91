import type { EntityManager } from 'typeorm'
import { describe, invalidArgument, type KEntityError } from '../../core/errors.ts'
import type { SqlStatement, TransactionAdapter } from '../../core/seams.ts'
import { assertTransactionStatus, TRANSACTION_PROBE } from '../../dialects/mysql/transaction-status.ts'
import { transactionError } from '../../dialects/postgres/transaction.ts'
import type { SqlDatabase } from '../data-layer.ts'
import { activeQueryRunner, dataSourceTypeOf } from './entity-manager.ts'

const HINT =
  'use the manager passed to dataSource.transaction(async (manager) => ...) (or outbox.transaction(dataSource, fn))'

/**
 * The TypeORM transaction binding on `database`: wraps the EntityManager TypeORM hands to
 * `dataSource.transaction(async (manager) => ...)`, checked to belong to a DataSource of that
 * database. Statements run on the transaction's own query runner, so messages commit or roll
 * back with the entities saved through the same manager.
 */
export function typeOrmTransaction(
  manager: EntityManager,
  database: SqlDatabase = 'postgres',
): TransactionAdapter {
  const type = dataSourceTypeOf(manager)
  if (database === 'postgres') {
    if (type !== 'postgres') throw notPostgres(type)
    return postgresBinding(manager)
  }
  if (type !== 'mysql' && type !== 'mariadb') throw notMysql(type)
  return mysqlBinding(manager)
}

function postgresBinding(manager: EntityManager): TransactionAdapter {
  return {
    dialect: 'postgres',
    assertInTransaction() {
      activeQueryRunner(manager)
    },
    async execute(statement: SqlStatement) {
      try {
        await activeQueryRunner(manager).query(statement.text, statement.values)
      } catch (error) {
        throw transactionError(error) ?? error
      }
    },
  }
}

/**
 * MySQL/MariaDB: TypeORM's own state must show the transaction open, and so must the server:
 * the runner's `DO 0` returns mysql2's OK packet, whose status flags also reveal a transaction
 * the server ended on its own (a deadlock rolls it back and leaves the session in autocommit,
 * while TypeORM still believes it open).
 */
function mysqlBinding(manager: EntityManager): TransactionAdapter {
  return {
    dialect: 'mysql',
    assertInTransaction: () => checked(TRANSACTION_PROBE, []),
    async execute(statement: SqlStatement) {
      await activeQueryRunner(manager).query(statement.text, statement.values)
    },
    executeChecked: (statement) => checked(statement.text, statement.values),
  }

  async function checked(text: string, values: unknown[]): Promise<void> {
    const result: unknown = await activeQueryRunner(manager).query(text, values)
    assertTransactionStatus((result as { serverStatus?: unknown } | undefined)?.serverStatus, HINT)
  }
}

export function notPostgres(type: unknown): KEntityError {
  return invalidArgument(
    `this outbox needs a DataSource of type 'postgres', this one is ${describe(type)}; ${
      type === 'mysql' || type === 'mariadb'
        ? 'pass the DataSource as `db` to createTypeOrmOutbox, which then speaks MySQL, or use k-entity/typeorm/mysql'
        : "k-entity's TypeORM adapter covers DataSource types 'postgres', 'mysql' and 'mariadb'"
    }`,
  )
}

export function notMysql(type: unknown): KEntityError {
  return invalidArgument(
    `this outbox needs a DataSource of type 'mysql' or 'mariadb', this one is ${describe(type)}; ${
      type === 'postgres'
        ? 'use k-entity/typeorm (createTypeOrmOutbox) for PostgreSQL'
        : "k-entity's TypeORM adapter covers DataSource types 'postgres', 'mysql' and 'mariadb'"
    }`,
  )
}
