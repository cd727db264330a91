// Every adapter's contract harness, one per data layer and database: the suites and benchmarks
// that run on all of them take this list, so a new adapter is added here once.
import type { ContractHarness } from './adapter-contract.ts'
import { betterSqliteHarness } from './harness-better-sqlite3.ts'
import { drizzleNodePgHarness, drizzlePostgresJsHarness } from './harness-drizzle.ts'
import { drizzleMysqlHarness } from './harness-drizzle-mysql.ts'
import { knexHarness } from './harness-knex.ts'
import { knexMysqlHarness } from './harness-knex-mysql.ts'
import { kyselyHarness } from './harness-kysely.ts'
import { kyselyMysqlHarness } from './harness-kysely-mysql.ts'
import { mikroOrmHarness } from './harness-mikro-orm.ts'
import { mikroOrmMysqlHarness } from './harness-mikro-orm-mysql.ts'
import { mysql2Harness } from './harness-mysql2.ts'
import { nodeSqliteHarness } from './harness-node-sqlite.ts'
import { pgHarness } from './harness-pg.ts'
import { pgliteHarness } from './harness-pglite.ts'
import { postgresJsHarness } from './harness-postgres-js.ts'
import { prismaHarness } from './harness-prisma.ts'
import { prismaMysqlHarness } from './harness-prisma-mysql.ts'
import { typeormHarness } from './harness-typeorm.ts'
import { typeormMysqlHarness } from './harness-typeorm-mysql.ts'

// biome-ignore lint/suspicious/noExplicitAny: each harness has its own transaction handle type
export const EVERY_ADAPTER: readonly ContractHarness<any>[] = [
  pgHarness,
  postgresJsHarness,
  kyselyHarness,
  knexHarness,
  drizzleNodePgHarness,
  drizzlePostgresJsHarness,
  typeormHarness,
  mikroOrmHarness,
  prismaHarness,
  pgliteHarness,
  mysql2Harness,
  kyselyMysqlHarness,
  knexMysqlHarness,
  drizzleMysqlHarness,
  typeormMysqlHarness,
  mikroOrmMysqlHarness,
  prismaMysqlHarness,
  betterSqliteHarness,
  nodeSqliteHarness,
]
