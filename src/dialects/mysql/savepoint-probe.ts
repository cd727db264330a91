import { ErrorCodes, KEntityError } from '../../core/errors.ts'

/** Long and specific, so that it never replaces a savepoint of the app's. */
const PROBE_SAVEPOINT = 'k_entity_transaction_probe'

/** ER_SP_DOES_NOT_EXIST: RELEASE SAVEPOINT of a savepoint the transaction does not have. */
export const SAVEPOINT_DOES_NOT_EXIST = 1305

/**
 * The in-transaction check for data layers that hide the OK packet's status flags, so that
 * TRANSACTION_PROBE cannot be read. Outside a transaction the server accepts SAVEPOINT and forgets
 * it with the statement's implicit commit, so the RELEASE that follows fails with
 * ER_SP_DOES_NOT_EXIST; inside one, or with autocommit off, both succeed and leave the transaction
 * as it was. Same verdict as `assertTransactionStatus`, including for a transaction a deadlock
 * silently ended, for one more round trip than `DO 0`.
 *
 * Probes on one transaction take turns (keyed by `handle`, the app's transaction object):
 * releasing a savepoint also drops any set after it, so two interleaved probes, as in a
 * `Promise.all` of produce calls, would make one of them fail.
 *
 * `run` executes one statement on the app's transaction handle; `errno` reads the server's error
 * number from what that data layer throws; `hint` tells its user how to open a transaction.
 */
export function assertInTransactionBySavepoint(
  handle: object,
  run: (sql: string) => Promise<unknown>,
  errno: (error: unknown) => number | undefined,
  hint: string,
): Promise<void> {
  const probe = () => probeOnce(run, errno, hint)
  const turn = (probes.get(handle) ?? Promise.resolve()).then(probe, probe)
  probes.set(handle, turn)
  return turn
}

const probes = new WeakMap<object, Promise<void>>()

async function probeOnce(
  run: (sql: string) => Promise<unknown>,
  errno: (error: unknown) => number | undefined,
  hint: string,
): Promise<void> {
  await run(`SAVEPOINT ${PROBE_SAVEPOINT}`)
  try {
    await run(`RELEASE SAVEPOINT ${PROBE_SAVEPOINT}`)
  } catch (error) {
    if (errno(error) !== SAVEPOINT_DOES_NOT_EXIST) throw error
    throw new KEntityError(
      ErrorCodes.NO_TRANSACTION,
      `outbox topics must be produced inside a transaction, and the server reports none open on this connection (never begun, or ended by the server, e.g. after a deadlock): ${hint}; nothing was stored`,
      { cause: error },
    )
  }
}
