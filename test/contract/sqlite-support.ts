/** What both SQLite harnesses share: a database file per test, and async producers for the suite. */
import { rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { SqliteTopicProducers } from '../../src/dialects/sqlite/sqlite-outbox.ts'
import type { TopicMap, TopicProducers } from '../../src/index.ts'

export function databaseFile(schema: string): string {
  return join(tmpdir(), `${schema}.sqlite`)
}

export function removeDatabaseFile(file: string): void {
  for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(`${file}${suffix}`, { force: true })
}

/**
 * SQLite producers write synchronously (and throw synchronously, so the driver's own
 * transaction rolls back); the suite awaits producers, so each call is wrapped in a promise.
 */
export function asyncProducers<M extends TopicMap>(producers: SqliteTopicProducers<M>): TopicProducers<M> {
  const wrapped: Record<string, unknown> = {}
  for (const [accessor, producer] of Object.entries(producers)) {
    wrapped[accessor] = {
      produce: async (message: never, options?: never) => producer.produce(message, options),
      produceMany: async (messages: never[], options?: never) => producer.produceMany(messages, options),
    }
  }
  return wrapped as TopicProducers<M>
}

/** `fn` inside a SQLite savepoint: released if it resolves, rolled back to if it throws. */
export async function inSavepoint<Db extends { exec(sql: string): unknown }, R>(
  db: Db,
  name: string,
  fn: (inner: Db) => Promise<R>,
): Promise<R> {
  db.exec(`SAVEPOINT ${name}`)
  try {
    const result = await fn(db)
    db.exec(`RELEASE ${name}`)
    return result
  } catch (error) {
    db.exec(`ROLLBACK TO ${name}`)
    db.exec(`RELEASE ${name}`)
    throw error
  }
}
