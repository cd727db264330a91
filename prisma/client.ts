/**
 * The PostgreSQL Prisma client of the tests, generated from prisma/schema.prisma on first use
 * into .tools/prisma-client (offline: see prisma/generate.ts).
 */
import { PrismaPg } from '@prisma/adapter-pg'
import { generatePrismaClient, type TestPrismaClient, type TestPrismaClientClass } from './generate.ts'

export type { OrderRow, TestPrismaClient, TestPrismaTransaction } from './generate.ts'

let generated: Promise<TestPrismaClientClass<PrismaPg>> | undefined

/** A client on `schema` (PostgreSQL search path of the generated queries) through `@prisma/adapter-pg`. */
export async function createPrismaClient(
  connectionString: string,
  schema: string,
): Promise<TestPrismaClient> {
  generated ??= generatePrismaClient<PrismaPg>('prisma/schema.prisma', '.tools/prisma-client')
  const PrismaClient = await generated
  return new PrismaClient({ adapter: new PrismaPg({ connectionString }, { schema }) })
}
