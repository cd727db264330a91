// The relay-store contract on MySQL/MariaDB (mysql2); see test/relay-store/contract.ts.
import { runRelayStoreContract } from './relay-store/contract.ts'
import { mysqlHarness } from './relay-store/harness-mysql.ts'

runRelayStoreContract(mysqlHarness)
