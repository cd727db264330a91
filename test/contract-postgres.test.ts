// The adapter contract for every PostgreSQL data layer; one call per harness covers a new one.
import { runAdapterContract } from './contract/adapter-contract.ts'
import {
  drizzleNodePgHarness,
  drizzleNodePgHeldInHarness,
  drizzleNodePgHelperTopicsHarness,
  drizzlePostgresJsHarness,
  drizzlePostgresJsHelperTopicsHarness,
} from './contract/harness-drizzle.ts'
import { knexHarness, knexHeldInHarness, knexHelperTopicsHarness } from './contract/harness-knex.ts'
import { kyselyControlledHarness, kyselyHarness } from './contract/harness-kysely.ts'
import { mikroOrmHarness } from './contract/harness-mikro-orm.ts'
import { pgHarness, pgHeldInHarness, pgHelperTopicsHarness } from './contract/harness-pg.ts'
import { pgliteHarness } from './contract/harness-pglite.ts'
import { postgresJsHarness, postgresJsHelperTopicsHarness } from './contract/harness-postgres-js.ts'
import { prismaHarness } from './contract/harness-prisma.ts'
import {
  typeormHarness,
  typeormHeldInHarness,
  typeormHelperTopicsHarness,
} from './contract/harness-typeorm.ts'

runAdapterContract(pgHarness)
runAdapterContract(pgHelperTopicsHarness)
runAdapterContract(pgHeldInHarness)
runAdapterContract(postgresJsHarness)
runAdapterContract(postgresJsHelperTopicsHarness)
runAdapterContract(kyselyHarness)
runAdapterContract(kyselyControlledHarness)
runAdapterContract(knexHarness)
runAdapterContract(knexHelperTopicsHarness)
runAdapterContract(knexHeldInHarness)
runAdapterContract(drizzleNodePgHarness)
runAdapterContract(drizzleNodePgHelperTopicsHarness)
runAdapterContract(drizzleNodePgHeldInHarness)
runAdapterContract(drizzlePostgresJsHarness)
runAdapterContract(drizzlePostgresJsHelperTopicsHarness)
runAdapterContract(typeormHarness)
runAdapterContract(typeormHelperTopicsHarness)
runAdapterContract(typeormHeldInHarness)
runAdapterContract(mikroOrmHarness)
runAdapterContract(prismaHarness)
runAdapterContract(pgliteHarness)
