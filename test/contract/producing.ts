/**
 * The three ways a data layer's harness produces, shared by those that hold writes until COMMIT:
 * `in(tx)` in the layer's own transaction, the topics `outbox.transaction()` hands to its
 * callback, or `in(tx, { holdWrites: true })` in the layer's own transaction.
 */
import type { TopicProducers } from '../../src/index.ts'
import type { ContractContext, ContractTopics } from './adapter-contract.ts'

export type Producing = 'in' | 'helper topics' | 'held in'

export interface ProducingOutbox<Tx> {
  /** `outbox.transaction(db, fn)` on the harness's database. */
  transaction<R>(fn: (tx: Tx, topics: TopicProducers<ContractTopics>) => Promise<R>): Promise<R>
  in(tx: Tx, options: { holdWrites: boolean }): TopicProducers<ContractTopics>
}

/**
 * The harness's `transaction` and `producers` for `producing`. `own`: the data layer's own
 * transaction, used for `held in` (the app's code, with no helper of the outbox around it).
 */
export function producingWays<Tx extends object>(
  producing: Producing,
  outbox: ProducingOutbox<Tx>,
  own: <R>(fn: (tx: Tx) => Promise<R>) => Promise<R>,
): Pick<ContractContext<Tx>, 'transaction' | 'producers'> {
  const fromHelper = new WeakMap<Tx, TopicProducers<ContractTopics>>()
  return {
    transaction: (fn) =>
      producing === 'held in'
        ? own(fn)
        : outbox.transaction((tx, topics) => {
            if (producing === 'helper topics') fromHelper.set(tx, topics)
            return fn(tx)
          }),
    producers: (tx) => fromHelper.get(tx) ?? outbox.in(tx, { holdWrites: producing === 'held in' }),
  }
}

/** `holdsWrites` of a harness producing this way (see `ContractHarness.holdsWrites`). */
export const holdsWrites = (producing: Producing): boolean => producing !== 'in'
