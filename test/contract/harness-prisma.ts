import { createPrismaClient, type TestPrismaTransaction } from '../../prisma/client.ts'
import { createPrismaOutbox, type PrismaTransactionClient } from '../../src/adapters/prisma/index.ts'
import type { ContractHarness } from './adapter-contract.ts'
import { createOrdersTable, DATABASE_URL, dropSchema, postgresInspection } from './postgres-support.ts'

/** Prisma 7 (query compiler, no Rust engine) through @prisma/adapter-pg, with interactive transactions. */
export const prismaHarness: ContractHarness<TestPrismaTransaction> = {
  name: 'prisma (adapter-pg)',
  dialect: 'postgres',
  async setup({ topics, schema, brokers }) {
    const outbox = createPrismaOutbox({ topics, schema, kafka: { brokers, autoCreateTopics: true } })
    await outbox.migrate(DATABASE_URL)
    await createOrdersTable(schema)
    const prisma = await createPrismaClient(DATABASE_URL, schema)
    return {
      inbox: { outbox, db: prisma, target: DATABASE_URL },
      transaction: (fn) => outbox.transaction(prisma, (tx) => fn(tx)),
      async insertOrder(tx, id, customer) {
        await tx.order.create({ data: { id, customer } })
      },
      producers: (tx) => outbox.in(tx),
      produceOutsideTransaction: (event) =>
        // The types keep the root client out; this is the runtime check for untyped callers.
        outbox.in(prisma as unknown as PrismaTransactionClient).orders.produce(event),
      relay: (options) => outbox.relay({ ...options, connection: DATABASE_URL }),
      ...postgresInspection(schema),
      async teardown() {
        await prisma.$disconnect()
        await outbox.close()
        await dropSchema(schema)
      },
    }
  },
  // Prisma 7 runs $transaction on a transaction client as a savepoint of the outer transaction.
  nested: (tx, fn) => tx.$transaction((inner) => fn(inner)),
}
