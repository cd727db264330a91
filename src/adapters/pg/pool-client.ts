import type pg from 'pg'

/**
 * Runs `fn` on a client checked out of `pool`, then releases it. A checked-out client has no
 * pool listener for its 'error' event, so a connection lost between two queries would crash the
 * process. The query in flight or the next one reports the loss; releasing the client with the
 * error makes the pool discard it.
 */
export async function withPoolClient<R>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient) => Promise<R>,
): Promise<R> {
  const client = await pool.connect()
  let lost: Error | undefined
  const onError = (error: Error) => {
    lost ??= error
  }
  client.on('error', onError)
  try {
    return await fn(client)
  } finally {
    client.off('error', onError)
    client.release(lost)
  }
}
