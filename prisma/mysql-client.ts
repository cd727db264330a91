/**
 * The MySQL/MariaDB Prisma client of the tests, generated from prisma/mysql/schema.prisma on
 * first use into .tools/prisma-client-mysql (offline: see prisma/generate.ts).
 */
import { PrismaMariaDb } from '@prisma/adapter-mariadb'
import { generatePrismaClient, type TestPrismaClient, type TestPrismaClientClass } from './generate.ts'

export type { OrderRow, TestPrismaClient, TestPrismaTransaction } from './generate.ts'

let generated: Promise<TestPrismaClientClass<PrismaMariaDb>> | undefined

/**
 * A client on `database` through `@prisma/adapter-mariadb` (which takes `mysql://` URLs too);
 * `database` replaces the URL's own database, so each test works in a database of its own.
 */
export async function createPrismaMysqlClient(url: string, database: string): Promise<TestPrismaClient> {
  generated ??= generatePrismaClient<PrismaMariaDb>(
    'prisma/mysql/schema.prisma',
    '.tools/prisma-client-mysql',
  )
  const PrismaClient = await generated
  const target = new URL(url)
  target.pathname = `/${database}`
  target.searchParams.set('connectionLimit', '10')
  return new PrismaClient({ adapter: new PrismaMariaDb(target.toString(), { database }) })
}
