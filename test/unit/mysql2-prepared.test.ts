// The mysql2 adapter sends a named (recurring) statement as a prepared one, and falls back to the
// text protocol when the server refuses to prepare it, so a server whose prepared statements are
// all taken slows the consumer's batches down instead of failing every one of them.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { mysql2Transaction } from '../../src/adapters/mysql2/index.ts'

function fakeConnection(executeError?: object) {
  const calls: string[] = []
  const connection = {
    async query(text: string) {
      calls.push(`query ${text}`)
      return [{ affectedRows: 1 }, []]
    },
    async execute(text: string) {
      calls.push(`execute ${text}`)
      if (executeError !== undefined) throw executeError
      return [{ affectedRows: 1 }, []]
    },
  }
  return { connection, calls }
}

const named = { text: 'INSERT 1', values: [1], name: 'ke_inbox_1' }

describe('mysql2Transaction().execute()', () => {
  it('prepares a named statement and sends an unnamed one as text', async () => {
    const { connection, calls } = fakeConnection()
    const adapter = mysql2Transaction(connection as never)
    await adapter.execute(named)
    await adapter.execute({ text: 'INSERT 2', values: [2] })
    assert.deepEqual(calls, ['execute INSERT 1', 'query INSERT 2'])
  })

  it('sends it as text when the server refuses to prepare it', async () => {
    for (const errno of [1461, 1295]) {
      const { connection, calls } = fakeConnection(Object.assign(new Error('refused'), { errno }))
      await mysql2Transaction(connection as never).execute(named)
      assert.deepEqual(calls, ['execute INSERT 1', 'query INSERT 1'])
    }
  })

  it('passes any other failure on (a duplicate key must fail the batch)', async () => {
    const duplicate = Object.assign(new Error('Duplicate entry'), { errno: 1062, code: 'ER_DUP_ENTRY' })
    const { connection, calls } = fakeConnection(duplicate)
    await assert.rejects(mysql2Transaction(connection as never).execute(named), duplicate)
    assert.deepEqual(calls, ['execute INSERT 1'])
  })

  it('uses text on a connection that only has query()', async () => {
    const calls: string[] = []
    const connection = {
      async query(text: string) {
        calls.push(`query ${text}`)
        return [{}, []]
      },
    }
    await mysql2Transaction(connection as never).execute(named)
    assert.deepEqual(calls, ['query INSERT 1'])
  })
})
