import { createPrismaMysqlClient, type TestPrismaTransaction } from '../../prisma/mysql-client.ts'
import { createPrismaOutbox, type PrismaTransactionClient } from '../../src/adapters/prisma/index.ts'
import type { ContractHarness } from './adapter-contract.ts'
import { createOrdersTable, dropDatabase, MYSQL_URL, mysqlInspection } from './mysql-support.ts'

/**
 * Prisma 7 (query compiler, no Rust engine) through @prisma/adapter-mariadb, with interactive
 * transactions. The one Prisma adapter, told the database by `db` (`k-entity/prisma/mysql` is
 * covered by adapters-mysql-orm).
 */
export const prismaMysqlHarness: ContractHarness<TestPrismaTransaction> = {
  name: 'prisma (adapter-mariadb, detected from db)',
  dialect: 'mysql',
  async setup({ topics, schema, brokers }) {
    // The client connects on its first query, after migrate() created its database.
    const prisma = await createPrismaMysqlClient(MYSQL_URL, schema)
    const outbox = createPrismaOutbox({
      db: prisma,
      topics,
      schema,
      kafka: { brokers, autoCreateTopics: true },
    })
    await outbox.migrate(MYSQL_URL)
    await createOrdersTable(schema)
    return {
      inbox: { outbox, db: prisma, target: MYSQL_URL },
      transaction: (fn) => outbox.transaction(prisma, (tx) => fn(tx)),
      async insertOrder(tx, id, customer) {
        await tx.order.create({ data: { id, customer } })
      },
      producers: (tx) => outbox.in(tx),
      produceOutsideTransaction: (event) =>
        // The types keep the root client out; this is the runtime check for untyped callers.
        outbox.in(prisma as unknown as PrismaTransactionClient).orders.produce(event),
      relay: (options) => outbox.relay({ ...options, connection: MYSQL_URL }),
      ...mysqlInspection(schema),
      async teardown() {
        await prisma.$disconnect()
        await outbox.close()
        await dropDatabase(schema)
      },
    }
  },
  // Prisma 7 runs $transaction on a transaction client as a savepoint of the outer transaction,
  // on MySQL/MariaDB as on PostgreSQL.
  nested: (tx, fn) => tx.$transaction((inner) => fn(inner)),
}
