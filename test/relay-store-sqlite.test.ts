// The relay-store contract on SQLite, through both drivers; see test/relay-store/contract.ts.
import { runRelayStoreContract } from './relay-store/contract.ts'
import { betterSqliteHarness, nodeSqliteHarness } from './relay-store/harness-sqlite.ts'

runRelayStoreContract(betterSqliteHarness)
runRelayStoreContract(nodeSqliteHarness)
