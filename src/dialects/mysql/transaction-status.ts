import { ErrorCodes, KEntityError } from '../../core/errors.ts'
import { noTransaction } from '../shared/transaction-errors.ts'

export { noTransaction }

/** Status flags of the server's OK packet (mysql_com.h). */
const SERVER_STATUS_IN_TRANS = 0x0001
const SERVER_STATUS_AUTOCOMMIT = 0x0002

/**
 * The statement whose OK packet tells whether a transaction is open. Drivers do not keep the
 * server's transaction flag, and @@in_transaction is MariaDB-only, so adapters ask the server:
 * `DO 0` does nothing, and its OK packet carries SERVER_STATUS_IN_TRANS (set by BEGIN / START
 * TRANSACTION until COMMIT or ROLLBACK, also after a deadlock silently ended the transaction)
 * and SERVER_STATUS_AUTOCOMMIT. Cost: one extra round trip per produce call (about 0.1 ms on a
 * local server), paid before anything is written, so a forgotten BEGIN can never autocommit an
 * outbox row on its own. Keyed messages skip it where the adapter reads the key locks' own OK
 * packet (`keyLocksSql`, `TransactionAdapter.executeChecked`).
 */
export const TRANSACTION_PROBE = 'DO 0'

/**
 * Throws KE_NO_TRANSACTION unless `serverStatus` (of the probe's OK packet) shows an open
 * transaction; `hint` tells the user of that data layer how to open one.
 */
export function assertTransactionStatus(serverStatus: unknown, hint: string): void {
  if (typeof serverStatus !== 'number') {
    throw new KEntityError(
      ErrorCodes.NO_TRANSACTION,
      'cannot tell whether a transaction is open on this connection: the server reported no status flags (a proxy in between?); nothing was stored',
    )
  }
  // With autocommit off, every statement joins the transaction the app will COMMIT.
  if (serverStatus & SERVER_STATUS_IN_TRANS || !(serverStatus & SERVER_STATUS_AUTOCOMMIT)) return
  throw noTransaction(hint)
}
