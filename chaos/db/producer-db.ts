/**
 * A producer process's database half (chaos/producer.ts loads one by the run's --db): its pool,
 * the two ways it runs a business transaction, and the two raw inserts it makes in one.
 */
import type { ChaosEvent, ProducerConfig } from '../shared.ts'

/** The tracked topics' producers inside one transaction (the outbox's `in(tx)`). */
export interface ChaosProducers {
  orders: TopicProducer
  payments: TopicProducer
  missing: TopicProducer
}
interface TopicProducer {
  produce(event: ChaosEvent): unknown
  produceMany(events: ChaosEvent[]): unknown
}

/** What a transaction body may do besides producing. */
export interface ChaosTx {
  /** Business rows: [id, topic accessor, key]. */
  insertBusiness(rows: [string, string, string][]): Promise<void>
  /** The internal-topic poison: a row no defineTopic() accepts, written into the outbox table by hand. */
  insertInternalTopicRow(event: ChaosEvent): Promise<void>
}

/** `stage.committing` turns true once nothing but the COMMIT (with any held writes) is left to send. */
export type Transaction = (
  fn: (tx: ChaosTx, topics: ChaosProducers) => Promise<void>,
  stage: { committing: boolean },
) => Promise<void>

export interface ProducerDb {
  /** The outbox's own transaction helper. */
  helperTransaction: Transaction
  /** The app's own BEGIN/COMMIT, producing through `outbox.in(tx)`. */
  ownTransaction: Transaction
  end(): Promise<void>
}

export type OpenProducerDb = (config: ProducerConfig) => ProducerDb

export async function loadProducerDb(config: ProducerConfig): Promise<ProducerDb> {
  const module = (await import(`./producer-${config.db}.ts`)) as {
    openProducerDb: OpenProducerDb
  }
  return module.openProducerDb(config)
}
