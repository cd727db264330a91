// The adapter contract for every MySQL/MariaDB data layer; add a harness to cover a new one.
import { runAdapterContract } from './contract/adapter-contract.ts'
import { mysql2Harness } from './contract/harness-mysql2.ts'

runAdapterContract(mysql2Harness)
