// The options the SQLite benches share: which drivers, and the `synchronous` setting.

export const SQLITE_DRIVERS = ['better-sqlite3', 'node-sqlite'] as const
export type SqliteDriver = (typeof SQLITE_DRIVERS)[number]

/** `--driver` (one of SQLITE_DRIVERS, or both) and `--synchronous`; exits naming a bad one. */
export function parseSqliteOptions(values: { driver: string; synchronous: string }): {
  drivers: SqliteDriver[]
  synchronous: 'NORMAL' | 'FULL'
} {
  const drivers = values.driver === 'both' ? [...SQLITE_DRIVERS] : [values.driver]
  if (!drivers.every((d): d is SqliteDriver => (SQLITE_DRIVERS as readonly string[]).includes(d))) {
    console.error('--driver must be better-sqlite3, node-sqlite or both')
    process.exit(1)
  }
  // NORMAL is what WAL is usually run with (a commit is durable at the next checkpoint's fsync,
  // not its own); FULL fsyncs the WAL on every commit.
  const synchronous = values.synchronous.toUpperCase()
  if (synchronous !== 'NORMAL' && synchronous !== 'FULL') {
    console.error('--synchronous must be normal or full')
    process.exit(1)
  }
  return { drivers, synchronous }
}
