// The inbox contract (test/contract/inbox-contract.ts) through every adapter: outbox.consume()
// with the handler in the adapter's own transaction, on PostgreSQL, MySQL/MariaDB, PGlite, and
// the refusal on SQLite.
import { EVERY_ADAPTER } from './contract/harnesses.ts'
import { runInboxContract } from './contract/inbox-contract.ts'

for (const harness of EVERY_ADAPTER) runInboxContract(harness)
