import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { inspect } from 'node:util'
import { createDrizzleOutbox } from '../src/adapters/drizzle/index.ts'
import { createDrizzleMysqlOutbox } from '../src/adapters/drizzle/mysql.ts'
import { createKnexOutbox } from '../src/adapters/knex/index.ts'
import { createKnexMysqlOutbox } from '../src/adapters/knex/mysql.ts'
import { createKyselyOutbox } from '../src/adapters/kysely/index.ts'
import { createKyselyMysqlOutbox } from '../src/adapters/kysely/mysql.ts'
import { createMikroOrmOutbox } from '../src/adapters/mikro-orm/index.ts'
import { createMikroOrmMysqlOutbox } from '../src/adapters/mikro-orm/mysql.ts'
import { createMysqlOutbox } from '../src/adapters/mysql2/index.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { createPostgresJsOutbox } from '../src/adapters/postgres-js/index.ts'
import { createPrismaOutbox } from '../src/adapters/prisma/index.ts'
import { createPrismaMysqlOutbox } from '../src/adapters/prisma/mysql.ts'
import { createTypeOrmOutbox } from '../src/adapters/typeorm/index.ts'
import { createTypeOrmMysqlOutbox } from '../src/adapters/typeorm/mysql.ts'
import { describe as describeValue, redactCredentials } from '../src/core/errors.ts'
import { defineTopic, type RelayEvent } from '../src/index.ts'

/**
 * A password in a connection URL never reaches an error k-entity produces: through every
 * adapter, for a server that refuses the connection, a URL that does not parse, and (MySQL) a
 * wrong password, the password appears neither in `String(error)`, nor in `error.stack`, nor in
 * `util.inspect(error)` (which shows the whole cause chain) once the exact URL the caller passed
 * is taken out of it (a driver may keep its own input, as `new URL()`'s TypeError does).
 */

const SECRET = 's3cr3t-pw'
const PG_URLS = [
  `postgres://postgres:${SECRET}@127.0.0.1:1/x`,
  `postgres://postgres:${SECRET}@127.0.0.1:notaport/x`,
]
const MYSQL_URLS = [
  `mysql://root:${SECRET}@127.0.0.1:1/x`,
  `mysql://root:${SECRET}@127.0.0.1:notaport/x`,
  `mysql://root:${SECRET}@127.0.0.1:3306/test`,
]

interface AnyOutbox {
  migrate(target: never): Promise<unknown>
  stats(target: never): Promise<unknown>
  relay(options: Record<string, unknown>): {
    start(): Promise<void>
    stop(options?: { timeout?: number }): Promise<void>
  }
  close(): Promise<void>
}

const options = () => ({
  topics: { t: defineTopic<string>({ name: 'secrets-test' }) },
  kafka: { brokers: ['127.0.0.1:1'] },
})

const postgresFactories: [string, () => AnyOutbox][] = [
  ['pg', () => createPgOutbox(options()) as unknown as AnyOutbox],
  ['postgres-js', () => createPostgresJsOutbox(options()) as unknown as AnyOutbox],
  ['kysely', () => createKyselyOutbox(options()) as unknown as AnyOutbox],
  ['knex', () => createKnexOutbox(options()) as unknown as AnyOutbox],
  ['drizzle', () => createDrizzleOutbox(options()) as unknown as AnyOutbox],
  ['typeorm', () => createTypeOrmOutbox(options()) as unknown as AnyOutbox],
  ['mikro-orm', () => createMikroOrmOutbox(options()) as unknown as AnyOutbox],
  ['prisma', () => createPrismaOutbox(options()) as unknown as AnyOutbox],
]
const mysqlFactories: [string, () => AnyOutbox][] = [
  ['mysql2', () => createMysqlOutbox(options()) as unknown as AnyOutbox],
  ['kysely/mysql', () => createKyselyMysqlOutbox(options()) as unknown as AnyOutbox],
  ['knex/mysql', () => createKnexMysqlOutbox(options()) as unknown as AnyOutbox],
  ['drizzle/mysql', () => createDrizzleMysqlOutbox(options()) as unknown as AnyOutbox],
  ['typeorm/mysql', () => createTypeOrmMysqlOutbox(options()) as unknown as AnyOutbox],
  ['mikro-orm/mysql', () => createMikroOrmMysqlOutbox(options()) as unknown as AnyOutbox],
  ['prisma/mysql', () => createPrismaMysqlOutbox(options()) as unknown as AnyOutbox],
]

function assertNoSecret(error: unknown, url: string, where: string): void {
  assert.ok(error !== undefined, `${where}: expected an error`)
  if (process.env.SHOW_ERRORS) console.log(`# ${where}: ${String(error)}`)
  const text = String(error)
  const stack = error instanceof Error ? String(error.stack) : ''
  const inspected = inspect(error, { depth: 20 }).split(url).join('<the caller’s url>')
  assert.ok(!text.includes(SECRET), `${where}: String(error) shows the password: ${text}`)
  assert.ok(!stack.includes(SECRET), `${where}: error.stack shows the password: ${stack}`)
  assert.ok(!inspected.includes(SECRET), `${where}: util.inspect(error) shows the password: ${inspected}`)
}

async function failure(work: () => Promise<unknown>): Promise<unknown> {
  try {
    await work()
  } catch (error) {
    return error
  }
  return undefined
}

/** The first error event of a relay connecting to `url`. */
async function relayError(outbox: AnyOutbox, url: string): Promise<unknown> {
  let relay: ReturnType<AnyOutbox['relay']> | undefined
  try {
    const first = new Promise<unknown>((resolve) => {
      relay = outbox.relay({
        connection: url,
        onEvent: (event: RelayEvent) => {
          if (event.type === 'error') resolve(event.error)
        },
      })
    })
    await relay?.start()
    return await Promise.race([first, new Promise((resolve) => setTimeout(() => resolve(undefined), 15_000))])
  } catch (error) {
    return error
  } finally {
    await relay?.stop({ timeout: 0 }).catch(() => {})
  }
}

async function checkAdapter(name: string, create: () => AnyOutbox, urls: string[]): Promise<void> {
  const outbox = create()
  try {
    for (const url of urls) {
      assertNoSecret(await failure(() => outbox.migrate(url as never)), url, `${name} migrate(${url})`)
      assertNoSecret(await failure(() => outbox.stats(url as never)), url, `${name} stats(${url})`)
      assertNoSecret(await relayError(outbox, url), url, `${name} relay error event (${url})`)
    }
  } finally {
    await outbox.close()
  }
}

describe('no password in errors', () => {
  it('describe() and redactCredentials() leave the password out of a URL', () => {
    const url = `mysql://root:${SECRET}@db.example:3306/x`
    assert.equal(redactCredentials(url), 'mysql://root:***@db.example:3306/x')
    assert.ok(!describeValue(url).includes(SECRET))
    assert.equal(redactCredentials('postgres://a:b@c@h/d'), 'postgres://a:***@h/d')
    assert.equal(redactCredentials('no url here'), 'no url here')
  })

  for (const [name, create] of postgresFactories) {
    it(`PostgreSQL through ${name}`, async () => checkAdapter(name, create, PG_URLS))
  }
  for (const [name, create] of mysqlFactories) {
    it(`MySQL/MariaDB through ${name}`, async () => checkAdapter(name, create, MYSQL_URLS))
  }
})
