// The MySQL write path's round trips: the key locks (an UPDATE that changes nothing) also tell
// whether a transaction is open, so a keyed produce() costs two statements (key locks, INSERT); a
// keyless one still sends `DO 0` first.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import mysql from 'mysql2/promise'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { defineTopic, ErrorCodes } from '../src/index.ts'
import { countMysqlRows, dropDatabase, MYSQL_URL } from './contract/mysql-support.ts'

const database = `kentity_writepath_${process.pid}`
const topics = {
  keyed: defineTopic<{ k: string }>({ name: 'keyed', key: (m) => m.k }),
  keyless: defineTopic<{ k: string }>({ name: 'keyless' }),
}
const outbox = createMysqlOutbox({ topics, schema: database, kafka: { brokers: ['127.0.0.1:9'] } })
let connection: mysql.Connection

/** The first word of every statement the outbox sends on `connection` while `fn` runs. */
async function statementsOf(fn: (conn: mysql.Connection) => Promise<void>): Promise<string[]> {
  const sent: string[] = []
  const spy = new Proxy(connection, {
    get(target, property, receiver) {
      if (property === 'query')
        return (sql: string, values?: mysql.QueryValues) => {
          sent.push(sql.split(/\s+/)[0] as string)
          return target.query(sql, values)
        }
      return Reflect.get(target, property, receiver)
    },
  })
  await fn(spy)
  return sent
}

before(async () => {
  await dropDatabase(database)
  await outbox.migrate(MYSQL_URL)
  connection = await mysql.createConnection(MYSQL_URL)
})

after(async () => {
  await connection.end()
  await outbox.close()
  await dropDatabase(database)
})

describe('MySQL write path', () => {
  it('a keyed produce() sends the key locks and the INSERT, with no probe of its own', async () => {
    await connection.beginTransaction()
    const sent = await statementsOf((conn) => outbox.in(conn).keyed.produce({ k: 'a' }))
    await connection.commit()
    assert.deepEqual(sent, ['UPDATE', 'INSERT'])
    const keyless = await statementsOf(async (conn) => {
      await conn.beginTransaction()
      await outbox.in(conn).keyless.produce({ k: 'b' })
      await conn.commit()
    })
    assert.deepEqual(keyless, ['DO', 'INSERT'])
    assert.equal(await countMysqlRows(database), 2)
  })

  it('outside a transaction the key locks refuse the write: nothing is stored', async () => {
    const sent = await statementsOf((conn) =>
      assert.rejects(outbox.in(conn).keyed.produce({ k: 'c' }), { code: ErrorCodes.NO_TRANSACTION }),
    )
    assert.deepEqual(sent, ['UPDATE'])
    assert.equal(await countMysqlRows(database), 2)
  })
})
