/** What every PostgreSQL harness shares: the business table, counts and cleanup, over a plain pg client. */
import { DATABASE_URL, dropSchema, withClient } from '../support/env.ts'
import type { ContractContext } from './adapter-contract.ts'

export { DATABASE_URL }

export async function createOrdersTable(schema: string): Promise<void> {
  await withClient((client) =>
    client.query(`CREATE TABLE "${schema}".orders (id text PRIMARY KEY, customer text NOT NULL)`),
  )
}

/** The context members that only look at the database, never through the adapter under test. */
export function postgresInspection(
  schema: string,
): Pick<ContractContext<unknown>, 'countOutbox' | 'countOrders' | 'outboxStatements'> {
  const scalar = (sql: string) => withClient(async (client) => (await client.query(sql)).rows[0].n as number)
  return {
    countOutbox: () => scalar(`SELECT count(*)::int AS n FROM "${schema}".outbox`),
    countOrders: () => scalar(`SELECT count(*)::int AS n FROM "${schema}".orders`),
    // cmin is the command id inside the writing transaction: rows of one INSERT share it.
    outboxStatements: () => scalar(`SELECT count(DISTINCT cmin::text)::int AS n FROM "${schema}".outbox`),
  }
}

export { dropSchema }
