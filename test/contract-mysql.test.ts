// The adapter contract for every MySQL/MariaDB data layer; add a harness to cover a new one.
import { runAdapterContract } from './contract/adapter-contract.ts'
import { drizzleMysqlHarness } from './contract/harness-drizzle-mysql.ts'
import { knexMysqlHarness } from './contract/harness-knex-mysql.ts'
import { kyselyMysqlControlledHarness, kyselyMysqlHarness } from './contract/harness-kysely-mysql.ts'
import { mikroOrmMysqlHarness } from './contract/harness-mikro-orm-mysql.ts'
import { mysql2Harness } from './contract/harness-mysql2.ts'
import { prismaMysqlHarness } from './contract/harness-prisma-mysql.ts'
import { typeormMysqlHarness } from './contract/harness-typeorm-mysql.ts'

runAdapterContract(mysql2Harness)
runAdapterContract(knexMysqlHarness)
runAdapterContract(kyselyMysqlHarness)
runAdapterContract(kyselyMysqlControlledHarness)
runAdapterContract(drizzleMysqlHarness)
runAdapterContract(typeormMysqlHarness)
runAdapterContract(mikroOrmMysqlHarness)
runAdapterContract(prismaMysqlHarness)
