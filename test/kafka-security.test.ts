// Kafka over TLS and SASL against a broker of this file's own (a SASL_SSL listener beside the
// PLAINTEXT one), and the errors a relay gets when it cannot reach or log into Kafka.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import pg from 'pg'
import { type KafkaBroker, startKafkaBroker } from '../scripts/kafka-broker.ts'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { ErrorCodes, KEntityError } from '../src/core/errors.ts'
import type { OutboxRecord } from '../src/core/record.ts'
import type { RelayEvent } from '../src/core/relay.ts'
import { defineTopic } from '../src/index.ts'
import { readTopic } from '../src/testing/index.ts'
import {
  type KafkaOptions,
  KafkaTransport,
  kafkaClientBase,
  validateKafkaOptions,
} from '../src/transports/kafka/index.ts'
import { createTopic, DATABASE_URL, dropSchema, uniqueName, waitFor } from './support/env.ts'

const SCRAM_PASSWORD = 'alice-Scram-9f2c'
const PLAIN_PASSWORD = 'bob-Plain-4e1a'
const WRONG_PASSWORD = 'not-alices-Password-77d0'

interface Certificates {
  dir: string
  /** The CA that signed the broker's certificate. */
  ca: string
  /** A CA that signed nothing the broker has. */
  otherCa: string
  serverChain: string
  serverKey: string
}

/** A throwaway CA and a broker certificate for 127.0.0.1 and localhost, made with openssl. */
function makeCertificates(): Certificates {
  const dir = mkdtempSync(join(tmpdir(), 'k-entity-tls-'))
  const file = (name: string) => join(dir, name)
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' })
  for (const ca of ['ca', 'other-ca']) {
    openssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      file(`${ca}.key`),
      '-out',
      file(`${ca}.pem`),
      '-days',
      '2',
      '-subj',
      `/CN=k-entity test ${ca}`,
    )
  }
  // `req -nodes` writes an unencrypted PKCS#8 key, the form Kafka's PEM keystore reads.
  openssl(
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    file('server.key'),
    '-out',
    file('server.csr'),
    '-subj',
    '/CN=localhost',
  )
  writeFileSync(file('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
  openssl(
    'x509',
    '-req',
    '-in',
    file('server.csr'),
    '-CA',
    file('ca.pem'),
    '-CAkey',
    file('ca.key'),
    '-CAcreateserial',
    '-out',
    file('server.pem'),
    '-days',
    '2',
    '-extfile',
    file('san.ext'),
  )
  return {
    dir,
    ca: readFileSync(file('ca.pem'), 'utf8'),
    otherCa: readFileSync(file('other-ca.pem'), 'utf8'),
    serverChain: readFileSync(file('server.pem'), 'utf8'),
    serverKey: readFileSync(file('server.key'), 'utf8'),
  }
}

function record(topic: string, value: string): OutboxRecord {
  return {
    topic,
    key: Buffer.from('k'),
    value: Buffer.from(value),
    headers: [],
  } as unknown as OutboxRecord
}

/** The error a single send fails with. */
async function sendError(options: KafkaOptions, topic = 'security-probe'): Promise<KEntityError> {
  const transport = new KafkaTransport({ retries: 2, requestTimeout: 5000, ...options })
  try {
    await transport.send([record(topic, 'probe')])
  } catch (error) {
    assert.ok(error instanceof KEntityError, `expected a KEntityError, got ${String(error)}`)
    return error
  } finally {
    await transport.close()
  }
  assert.fail('the send was expected to fail')
}

/** Every text an error chain carries, for checking that no secret is in any of it. */
function everyText(error: unknown, seen = new Set<unknown>()): string {
  if (typeof error !== 'object' || error === null || seen.has(error)) return ''
  seen.add(error)
  const { cause, errors } = error as { cause?: unknown; errors?: unknown[] }
  return [
    String(error),
    (error as Error).message,
    (error as Error).stack,
    everyText(cause, seen),
    ...(errors ?? []).map((inner) => everyText(inner, seen)),
  ].join('\n')
}

describe('Kafka over TLS and SASL', () => {
  let certificates: Certificates
  let broker: KafkaBroker
  let secured: string
  const schemas: string[] = []
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4 })

  before(async () => {
    certificates = makeCertificates()
    broker = await startKafkaBroker({
      quiet: true,
      saslSsl: {
        certificateChain: certificates.serverChain,
        privateKey: certificates.serverKey,
        scramUsers: { alice: SCRAM_PASSWORD },
        plainUsers: { bob: PLAIN_PASSWORD },
      },
    })
    secured = broker.saslSslBrokers as string
  })

  after(async () => {
    await pool.end()
    for (const schema of schemas) await dropSchema(schema)
    await broker?.stop()
    if (certificates) rmSync(certificates.dir, { recursive: true, force: true })
  })

  const scram = (password = SCRAM_PASSWORD): KafkaOptions => ({
    brokers: [secured],
    tls: { ca: certificates.ca },
    sasl: { mechanism: 'SCRAM-SHA-512', username: 'alice', password },
  })

  async function ordersOutbox(kafka: KafkaOptions, schema: string, topic: string) {
    const orders = defineTopic<{ id: number }>({ name: topic, key: (event) => `key-${event.id % 3}` })
    return createPgOutbox({ topics: { orders }, schema, kafka })
  }

  it('checks tls and sasl options, naming the field and never the secret', async () => {
    const brokers = ['127.0.0.1:9093']
    const rejects = (options: Record<string, unknown>, pattern: RegExp, secret?: string) => {
      assert.throws(
        () => validateKafkaOptions({ brokers, ...options }),
        (error: unknown) => {
          assert.ok(error instanceof KEntityError)
          assert.equal(error.code, ErrorCodes.INVALID_ARGUMENT)
          assert.match(error.message, pattern)
          if (secret !== undefined) assert.ok(!error.message.includes(secret), error.message)
          return true
        },
      )
    }
    rejects(
      { sasl: { mechanism: 'SCRAM-SHA-1', username: 'u', password: 'p' } },
      /PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER/,
    )
    rejects({ sasl: { mechanism: 'PLAIN', password: 'Secret-1' } }, /kafka\.sasl\.username/, 'Secret-1')
    rejects({ sasl: { mechanism: 'PLAIN', username: 'u' } }, /kafka\.sasl\.password/)
    rejects({ sasl: { mechanism: 'PLAIN', username: 'u', password: 42 } }, /kafka\.sasl\.password/)
    rejects(
      { sasl: { mechanism: 'PLAIN', username: 'u', password: 'Secret-2', passwd: 'Secret-3' } },
      /passwd/,
      'Secret-2',
    )
    rejects({ sasl: { mechanism: 'OAUTHBEARER' } }, /kafka\.sasl\.token/)
    rejects({ sasl: { mechanism: 'OAUTHBEARER', token: 'Tok-1', username: 'u' } }, /username/, 'Tok-1')
    rejects({ tls: 'yes' }, /kafka\.tls must be true or an object/)
    rejects({ tls: { ca: '/etc/ssl/ca.pem' } }, /kafka\.tls\.ca is not PEM.*readFileSync/)
    rejects({ tls: { rejectUnauthorised: false } }, /rejectUnauthorised.*rejectUnauthorized/)
    rejects(
      { tls: { ca: certificates.ca, rejectUnauthorized: 'no' } },
      /rejectUnauthorized must be a boolean/,
    )
    rejects({ tls: { cert: certificates.serverChain } }, /kafka\.tls\.key is missing/)
    rejects(
      { tls: { ca: '-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----' } },
      /kafka\.tls\.ca holds a certificate that cannot be read/,
    )
    rejects(
      { tls: { ca: '-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----' } },
      /kafka\.tls\.ca holds no/,
    )
    rejects(
      // A key that is not the certificate's: found at startup, not at the first connection.
      { tls: { cert: certificates.serverChain, key: readFileSync(join(certificates.dir, 'ca.key')) } },
      /kafka\.tls could not be loaded/,
    )
    rejects({ connectTimeout: -1 }, /kafka\.connectTimeout/)
    // PLAIN without TLS is allowed (a local SASL_PLAINTEXT listener) but said once.
    const warnings: Error[] = []
    const onWarning = (warning: Error) => warnings.push(warning)
    process.on('warning', onWarning)
    try {
      for (let i = 0; i < 2; i++) {
        validateKafkaOptions({ brokers, sasl: { mechanism: 'PLAIN', username: 'u', password: 'Secret-4' } })
      }
      await new Promise((resolve) => setImmediate(resolve))
    } finally {
      process.off('warning', onWarning)
    }
    const clearText = warnings.filter((w) => (w as { code?: string }).code === 'KE_SASL_WITHOUT_TLS')
    assert.equal(clearText.length, 1)
    assert.match(String(clearText[0]?.message), /PLAIN without kafka\.tls sends the password/)
    assert.ok(!String(clearText[0]?.message).includes('Secret-4'))
    // The connection part every client takes, with TLS and SASL as @platformatic/kafka wants them.
    const base = kafkaClientBase({ brokers, clientId: 'svc', tls: true, connectTimeout: 3000 })
    assert.deepEqual(base.tls, {})
    assert.equal(base.sasl, undefined)
    assert.deepEqual(base.bootstrapBrokers, brokers)
    assert.equal(base.clientId, 'svc')
    assert.equal(base.connectTimeout, 3000)
    assert.deepEqual(kafkaClientBase(scram()).sasl, {
      mechanism: 'SCRAM-SHA-512',
      username: 'alice',
      password: SCRAM_PASSWORD,
    })
  })

  it('a relay delivers over SASL_SSL with SCRAM-SHA-512 and the CA; read back over the same listener', async (t) => {
    const schema = uniqueName('ke_sec')
    const topic = uniqueName('ke_sec_scram')
    schemas.push(schema)
    await createTopic(topic, 2, [broker.brokers])
    const outbox = await ordersOutbox(scram(), schema, topic)
    await outbox.migrate(DATABASE_URL)
    await outbox.transaction(pool, async (_client, topics) => {
      for (let id = 0; id < 20; id++) await topics.orders.produce({ id })
    })
    const relay = outbox.relay({ connection: DATABASE_URL, pollingInterval: 50, logger: false })
    t.after(() => relay.stop())
    await relay.start()
    await waitFor(async () => (await outbox.stats(DATABASE_URL)).pending === 0, {
      timeout: 60_000,
      what: 'the relay to empty the outbox over SASL_SSL',
    })
    await relay.stop()
    const read = await readTopic({ ...scram(), topic, expectedCount: 20 })
    assert.deepEqual(
      read.map((m) => JSON.parse(String(m.value)).id).sort((a, b) => a - b),
      Array.from({ length: 20 }, (_, id) => id),
    )
  })

  it('PLAIN and SCRAM-SHA-256 work too', async () => {
    const topic = uniqueName('ke_sec_plain')
    await createTopic(topic, 1, [broker.brokers])
    const plain: KafkaOptions = {
      brokers: [secured],
      tls: { ca: certificates.ca },
      sasl: { mechanism: 'PLAIN', username: 'bob', password: PLAIN_PASSWORD },
    }
    const sha256: KafkaOptions = {
      brokers: [secured],
      tls: { ca: certificates.ca },
      sasl: { mechanism: 'SCRAM-SHA-256', username: 'alice', password: SCRAM_PASSWORD },
    }
    for (const [options, value] of [
      [plain, 'over PLAIN'],
      [sha256, 'over SCRAM-SHA-256'],
    ] as const) {
      const transport = new KafkaTransport(options)
      try {
        await transport.send([record(topic, value)])
      } finally {
        await transport.close()
      }
    }
    const read = await readTopic({ ...plain, topic, expectedCount: 2 })
    assert.deepEqual(read.map((m) => String(m.value)).sort(), ['over PLAIN', 'over SCRAM-SHA-256'])
  })

  it('a wrong password is a clear KE_KAFKA_AUTH_FAILED naming mechanism and user, never the password', async () => {
    const error = await sendError(scram(WRONG_PASSWORD))
    assert.equal(error.code, ErrorCodes.KAFKA_AUTH_FAILED)
    assert.match(error.message, /SCRAM-SHA-512 authentication of user "alice" failed at 127\.0\.0\.1:\d+/)
    assert.match(error.message, /check kafka\.sasl\.username and kafka\.sasl\.password/)
    // Retryable for the relay: it keeps the messages and backs off (see the next test).
    assert.equal(error.retryable, true)
    assert.ok(!error.message.includes(WRONG_PASSWORD), error.message)
    assert.ok(!String(error.cause).includes(WRONG_PASSWORD))
    assert.ok(!everyText(error).includes(WRONG_PASSWORD))

    const plain = await sendError({
      brokers: [secured],
      tls: { ca: certificates.ca },
      sasl: { mechanism: 'PLAIN', username: 'bob', password: WRONG_PASSWORD },
    })
    assert.equal(plain.code, ErrorCodes.KAFKA_AUTH_FAILED)
    assert.match(plain.message, /PLAIN authentication of user "bob" failed/)
    assert.ok(!everyText(plain).includes(WRONG_PASSWORD))

    // A mechanism the listener does not enable is an authentication failure too, and says so.
    const oauth = await sendError({
      brokers: [secured],
      tls: { ca: certificates.ca },
      sasl: { mechanism: 'OAUTHBEARER', token: async () => 'Token-Not-Shown' },
    })
    assert.equal(oauth.code, ErrorCodes.KAFKA_AUTH_FAILED)
    assert.match(oauth.message, /OAUTHBEARER authentication failed .*UNSUPPORTED_SASL_MECHANISM/)
    assert.ok(!everyText(oauth).includes('Token-Not-Shown'))
  })

  it('after an authentication failure the relay keeps every message: nothing dead-lettered, delivered once fixed', async (t) => {
    const schema = uniqueName('ke_sec')
    const topic = uniqueName('ke_sec_auth')
    schemas.push(schema)
    await createTopic(topic, 1, [broker.brokers])
    const wrong = await ordersOutbox(scram(WRONG_PASSWORD), schema, topic)
    await wrong.migrate(DATABASE_URL)
    await wrong.transaction(pool, async (_client, topics) => {
      for (let id = 0; id < 5; id++) await topics.orders.produce({ id })
    })
    const events: RelayEvent[] = []
    const relay = wrong.relay({
      connection: DATABASE_URL,
      pollingInterval: 50,
      retryBackoff: { initial: 50, max: 200 },
      retry: { maxAttempts: 1 },
      logger: false,
      onEvent: (event) => events.push(event),
    })
    t.after(() => relay.stop())
    await relay.start()
    // Past the relay's third failed batch, where it would start trying messages one by one.
    await waitFor(() => events.filter((e) => e.type === 'error').length >= 5, {
      timeout: 90_000,
      what: 'five failed batches',
    })
    await relay.stop()
    const errors = events.filter((e) => e.type === 'error')
    for (const event of errors) {
      assert.equal(event.stage, 'send')
      assert.ok(event.error instanceof KEntityError)
      assert.equal(event.error.code, ErrorCodes.KAFKA_AUTH_FAILED)
      assert.match(event.error.message, /SCRAM-SHA-512 authentication of user "alice"/)
      assert.ok(!everyText(event.error).includes(WRONG_PASSWORD))
    }
    assert.deepEqual(
      events.filter((e) => e.type === 'message-failed'),
      [],
      'no message may be blamed for the credentials',
    )
    const stats = await wrong.stats(DATABASE_URL)
    assert.equal(stats.pending, 5)
    assert.equal(stats.retrying, 0, 'no attempt of a message was used up')
    assert.equal(stats.deadLetters, 0)

    // Fixed credentials deliver everything that waited.
    const right = await ordersOutbox(scram(), schema, topic)
    const fixed = right.relay({ connection: DATABASE_URL, pollingInterval: 50, logger: false })
    t.after(() => fixed.stop())
    await fixed.start()
    await waitFor(async () => (await right.stats(DATABASE_URL)).pending === 0, {
      timeout: 60_000,
      what: 'the fixed relay to deliver',
    })
    await fixed.stop()
    const read = await readTopic({ ...scram(), topic, expectedCount: 5 })
    assert.equal(read.length, 5)
  })

  it('TLS with the wrong CA is a certificate error that says to set kafka.tls.ca', async () => {
    const error = await sendError({
      brokers: [secured],
      tls: { ca: certificates.otherCa },
      sasl: { mechanism: 'SCRAM-SHA-512', username: 'alice', password: SCRAM_PASSWORD },
    })
    assert.equal(error.code, ErrorCodes.TRANSPORT_FAILED)
    assert.equal(error.retryable, true)
    assert.ok(error.message.includes(secured), error.message)
    assert.match(error.message, /certificate/)
    assert.match(error.message, /kafka\.tls\.ca/)
    assert.ok(!everyText(error).includes(SCRAM_PASSWORD))
  })

  it('a plaintext client on the TLS listener is told to set kafka.tls', async () => {
    const error = await sendError({ brokers: [secured] })
    assert.match(
      error.message,
      /no Kafka broker could be reached, tried .*: that listener speaks TLS: set kafka\.tls/,
    )
  })

  it('a closed port names the address and ECONNREFUSED', async () => {
    // A port the broker script picked free and nothing listens on now: the controller port is
    // bound, so take a fresh one by closing a listener.
    const { createServer } = await import('node:net')
    const server = createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as { port: number }
    await new Promise<void>((resolve) => server.close(() => resolve()))
    const address = `127.0.0.1:${port}`
    const error = await sendError({ brokers: [address] })
    assert.equal(error.code, ErrorCodes.TRANSPORT_FAILED)
    assert.equal(error.retryable, true)
    assert.ok(error.message.includes(`tried ${address} (ECONNREFUSED)`), error.message)
    assert.match(error.message, /check the host and port in kafka\.brokers/)
  })
})
