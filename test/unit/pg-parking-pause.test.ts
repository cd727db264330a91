import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { PostgresRelayStore } from '../../src/dialects/postgres/relay-store.ts'
import type { PgQueryResult, PgSession } from '../../src/dialects/postgres/session.ts'

/**
 * The park and unpark steps ride in the claim's query (see parking.ts). A server that refuses them
 * (a statement_timeout shorter than a park, say) must not fail every claim: after one failed
 * claim that carried them, the relay claims without them for a while, across reconnects.
 */
describe('PostgreSQL relay: parking steps pause after a failed claim', () => {
  it('claims without the steps after a claim that carried them failed, even on a new session', async () => {
    const claims: string[] = []
    let refuseSteps = true
    const session = (): PgSession => {
      const fake = {
        async query(textOrConfig: string | { text: string }): Promise<PgQueryResult | PgQueryResult[]> {
          const text = typeof textOrConfig === 'string' ? textOrConfig : textOrConfig.text
          if (text.includes('pg_backend_pid()')) {
            return { rows: [{ pid: 1, statement_timeout: '0', parking: true }], rowCount: 1 }
          }
          if (text.includes('FOR UPDATE OF o SKIP LOCKED')) {
            claims.push(text)
            if (refuseSteps && text.includes('"outbox_parked" (id,')) {
              throw Object.assign(new Error('canceling statement due to statement timeout'), {
                code: '57014',
              })
            }
          }
          return { rows: [], rowCount: 0 }
        },
        async end() {},
        on() {
          return fake
        },
      }
      return fake as unknown as PgSession
    }
    const store = new PostgresRelayStore({
      table: { schema: 'k_entity', table: 'outbox' },
      connect: async () => session(),
      claimTimeout: 30_000,
      sessionIdleTimeout: 0,
      concurrent: false,
      listen: false,
      exclusive: false,
    })
    await store.connect()
    await assert.rejects(store.claim(10), /statement timeout/)
    assert.equal(store.healthy, false)
    await store.connect()
    assert.deepEqual(await store.claim(10), [])
    assert.deepEqual(await store.claim(10), [])
    assert.equal(claims.length, 3)
    assert.match(claims[0] as string, /"outbox_parked" \(id,/, 'the first claim carried the steps')
    for (const text of claims.slice(1)) assert.doesNotMatch(text, /"outbox_parked" \(id,/)
    // The claims still keep back rows behind parked ones while the steps pause.
    for (const text of claims.slice(1)) assert.match(text, /"outbox_parked" AS parked/)
    refuseSteps = false
    await store.close()
  })
})
