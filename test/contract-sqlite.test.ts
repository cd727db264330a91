// The adapter contract for every SQLite driver; add a harness to cover a new one.
import { runAdapterContract } from './contract/adapter-contract.ts'
import { betterSqliteHarness } from './contract/harness-better-sqlite3.ts'
import { nodeSqliteHarness } from './contract/harness-node-sqlite.ts'

runAdapterContract(betterSqliteHarness)
runAdapterContract(nodeSqliteHarness)
