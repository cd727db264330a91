// The inbox contract (test/contract/inbox-contract.ts) through every adapter: outbox.consume()
// with the handler in the adapter's own transaction, on PostgreSQL, MySQL/MariaDB, PGlite, and
// the refusal on SQLite.
import { betterSqliteHarness } from './contract/harness-better-sqlite3.ts'
import { drizzleNodePgHarness, drizzlePostgresJsHarness } from './contract/harness-drizzle.ts'
import { drizzleMysqlHarness } from './contract/harness-drizzle-mysql.ts'
import { knexHarness } from './contract/harness-knex.ts'
import { knexMysqlHarness } from './contract/harness-knex-mysql.ts'
import { kyselyHarness } from './contract/harness-kysely.ts'
import { kyselyMysqlHarness } from './contract/harness-kysely-mysql.ts'
import { mikroOrmHarness } from './contract/harness-mikro-orm.ts'
import { mikroOrmMysqlHarness } from './contract/harness-mikro-orm-mysql.ts'
import { mysql2Harness } from './contract/harness-mysql2.ts'
import { nodeSqliteHarness } from './contract/harness-node-sqlite.ts'
import { pgHarness } from './contract/harness-pg.ts'
import { pgliteHarness } from './contract/harness-pglite.ts'
import { postgresJsHarness } from './contract/harness-postgres-js.ts'
import { prismaHarness } from './contract/harness-prisma.ts'
import { prismaMysqlHarness } from './contract/harness-prisma-mysql.ts'
import { typeormHarness } from './contract/harness-typeorm.ts'
import { typeormMysqlHarness } from './contract/harness-typeorm-mysql.ts'
import { runInboxContract } from './contract/inbox-contract.ts'

for (const harness of [
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
] as const) {
  runInboxContract(harness as Parameters<typeof runInboxContract>[0])
}
