// The relay-store contract on PGlite; see test/relay-store/contract.ts.
import { runRelayStoreContract } from './relay-store/contract.ts'
import { pgliteHarness } from './relay-store/harness-pglite.ts'

runRelayStoreContract(pgliteHarness)
