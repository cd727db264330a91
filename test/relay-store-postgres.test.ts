// The relay-store contract on PostgreSQL (node-postgres); see test/relay-store/contract.ts.
import { runRelayStoreContract } from './relay-store/contract.ts'
import { postgresHarness } from './relay-store/harness-postgres.ts'

runRelayStoreContract(postgresHarness)
