// The dashboard end to end: its HTTP API and its refusals over a real PostgreSQL outbox, and the
// page in headless Chromium (Debian's `chromium`, driven by playwright-core): messages produced
// move the pending figure and the backlog chart, a relay drains them, and a real dead letter
// (a message Kafka refuses as too large) is replayed by clicking, checked in the database.
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, statSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { Admin } from '@platformatic/kafka'
import pg from 'pg'
import { chromium } from 'playwright-core'
import { createPgOutbox } from '../src/adapters/pg/index.ts'
import { DASHBOARD_HEADER, dashboardHandler, startDashboard } from '../src/dashboard/index.ts'
import { defineTopic, isKEntityError } from '../src/index.ts'
import { DATABASE_URL, dropSchema, kafkaBrokers, uniqueName, waitFor } from './support/env.ts'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const noChromium = existsSync(CHROMIUM)
  ? false
  : `no Chromium at ${CHROMIUM}: install Debian's chromium (apt-get install chromium) or set CHROMIUM_PATH`

const brokers = kafkaBrokers()
const pool = new pg.Pool({ connectionString: DATABASE_URL, application_name: 'k-entity-dashboard-test' })
const schema = uniqueName('ke_dash')
const topicName = uniqueName('dash').replaceAll('_', '-')

interface Event {
  id: string
  key: string
  pad?: number
}

const outbox = createPgOutbox({
  topics: {
    events: defineTopic<Event>({
      name: topicName,
      key: (e) => e.key,
      serializer: {
        name: 'padded',
        serialize: (e) => Buffer.from(JSON.stringify(e) + ' '.repeat(e.pad ?? 0)),
      },
    }),
  },
  schema,
  kafka: { brokers, autoCreateTopics: true },
})
const admin = outbox.admin(DATABASE_URL)
let delivered = 0
const relay = outbox.relay({
  connection: DATABASE_URL,
  onEvent: (event) => {
    if (event.type === 'delivered') delivered += event.count
  },
})

async function produce(events: Event[]): Promise<void> {
  await outbox.transaction(pool, (_client, t) => t.events.produceMany(events))
}

async function drain(): Promise<void> {
  await waitFor(
    async () => {
      await relay.runOnce()
      return (await outbox.stats(DATABASE_URL)).pending === 0
    },
    { timeout: 30_000, interval: 10, what: 'the relay to empty the outbox' },
  )
}

async function sql<T = Record<string, unknown>>(text: string): Promise<T[]> {
  return (await pool.query(text)).rows as T[]
}

interface StatusBody {
  pending: number
  deadLetters: number
  topics: { topic: string; deadLetters: number }[]
}
interface ListBody {
  total: number
  deadLetters: { id: string; value: { bytes: number; truncated: boolean }; errors: { error: string }[] }[]
}
/** What the browser tests read in the page. */
interface PageGlobals {
  document: { getElementById(id: string): { textContent: string | null } | null }
  kEntityDashboard: { charts: { backlog: { data: number[][] } }; samples: { sent: number | null }[] }
}
interface ErrorBody {
  error: { code: string; message: string }
}

/** The dead letter the browser test replays: 20 KB to a topic whose limit is 4 KB, refused for good. */
let deadLetterId = ''

before(async () => {
  const kafkaAdmin = new Admin({ clientId: 'k-entity-tests', bootstrapBrokers: brokers })
  await kafkaAdmin.createTopics({
    topics: [topicName],
    partitions: 1,
    replicas: 1,
    configs: [{ name: 'max.message.bytes', value: '4096' }],
  })
  await kafkaAdmin.close()
  await outbox.migrate(DATABASE_URL)
  await produce([{ id: 'too-large', key: 'k', pad: 20_000 }])
  await drain()
  const dead = await outbox.deadLetters(DATABASE_URL).list()
  assert.equal(dead.length, 1, 'the oversized message is a dead letter')
  deadLetterId = dead[0]?.id as string
})

after(async () => {
  await relay.stop()
  await pool.end()
  await dropSchema(schema)
})

describe('dashboard HTTP API', () => {
  let server: Awaited<ReturnType<typeof startDashboard>>
  let readOnly: Awaited<ReturnType<typeof startDashboard>>
  before(async () => {
    server = await startDashboard({ admin, basePath: '/ops' })
    readOnly = await startDashboard({ admin, readOnly: true })
  })
  after(async () => {
    await server.close()
    await readOnly.close()
  })

  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(new URL(path, server.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json', [DASHBOARD_HEADER]: '1', ...headers },
      body: JSON.stringify(body),
    })

  it('listens on 127.0.0.1 by default and serves the page, its scripts and the chart library', async () => {
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/ops\/$/)
    const redirect = await fetch(server.url.replace(/\/$/, ''), { redirect: 'manual' })
    assert.equal(redirect.status, 302)
    assert.equal(redirect.headers.get('location'), '/ops/')
    const page = await fetch(server.url)
    assert.equal(page.status, 200)
    assert.match(page.headers.get('content-type') ?? '', /text\/html/)
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/)
    assert.match(await page.text(), /<script src="uplot.js"><\/script>/)
    const uplot = await fetch(new URL('uplot.js', server.url))
    assert.equal(uplot.status, 200)
    assert.match(await uplot.text(), /uPlot/)
    const outside = await fetch(new URL('/elsewhere', server.url))
    assert.equal(outside.status, 404)
  })

  it('/api/status and /api/dead-letters read the outbox', async () => {
    const status = (await (await fetch(new URL('api/status', server.url))).json()) as StatusBody
    assert.equal(status.deadLetters, 1)
    assert.equal(typeof status.pending, 'number')
    assert.deepEqual(
      status.topics.map((t) => [t.topic, t.deadLetters]),
      [[topicName, 1]],
    )
    const listed = await fetch(new URL(`api/dead-letters?topic=${topicName}&limit=10`, server.url))
    const list = (await listed.json()) as ListBody
    assert.equal(list.total, 1)
    assert.equal(list.deadLetters[0]?.id, deadLetterId)
    assert.ok((list.deadLetters[0]?.value.bytes ?? 0) > 20_000)
    assert.equal(list.deadLetters[0]?.value.truncated, true)
    assert.match(list.deadLetters[0]?.errors.at(-1)?.error ?? '', /MESSAGE_TOO_LARGE/)
    const bad = await fetch(new URL('api/dead-letters?limit=0', server.url))
    assert.equal(bad.status, 400)
    assert.match(((await bad.json()) as ErrorBody).error.message, /'limit' must be an integer from 1 to 1000/)
  })

  it('refuses changes without JSON, without its header, from another origin, by GET, or with bad ids', async () => {
    const noHeader = await fetch(new URL('api/dead-letters/purge', server.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ids: [deadLetterId] }),
    })
    assert.equal(noHeader.status, 403)
    assert.match(((await noHeader.json()) as ErrorBody).error.message, new RegExp(DASHBOARD_HEADER))
    const form = await fetch(new URL('api/dead-letters/purge', server.url), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', [DASHBOARD_HEADER]: '1' },
      body: `ids=${deadLetterId}`,
    })
    assert.equal(form.status, 415)
    const foreign = await post(
      'api/dead-letters/purge',
      { ids: [deadLetterId] },
      { origin: 'http://evil.example' },
    )
    assert.equal(foreign.status, 403)
    const get = await fetch(new URL('api/dead-letters/purge', server.url))
    assert.equal(get.status, 405)
    assert.equal(get.headers.get('allow'), 'POST')
    for (const body of [{}, { ids: [] }, { ids: ['1; DROP TABLE x'] }, { ids: [1] }, null]) {
      const response = await post('api/dead-letters/replay', body)
      assert.equal(response.status, 400, JSON.stringify(body))
    }
    const readOnlyPurge = await fetch(new URL('api/dead-letters/purge', readOnly.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json', [DASHBOARD_HEADER]: '1' },
      body: JSON.stringify({ ids: [deadLetterId] }),
    })
    assert.equal(readOnlyPurge.status, 403)
    assert.equal(await outbox.deadLetters(DATABASE_URL).count(), 1, 'nothing was purged')
  })

  it('mounts under Express-style routers (originalUrl, next) and plain node:http with basePath', async () => {
    const handler = dashboardHandler(admin)
    const nextCalls: string[] = []
    const scoped = dashboardHandler(admin, { basePath: '/ops' })
    // What Express's app.use('/mount', handler) hands over: the mount path stripped from req.url.
    const express: Server = createServer((req: IncomingMessage & { originalUrl?: string }, res) => {
      if (req.url?.startsWith('/mount')) {
        req.originalUrl = req.url
        req.url = req.url.slice('/mount'.length) || '/'
        handler(req, res, () => res.end('next'))
      } else {
        scoped(req, res, () => {
          nextCalls.push(req.url ?? '')
          res.end('next')
        })
      }
    })
    await new Promise<void>((resolve) => express.listen(0, '127.0.0.1', resolve))
    try {
      const base = `http://127.0.0.1:${(express.address() as AddressInfo).port}`
      const bare = await fetch(`${base}/mount`, { redirect: 'manual' })
      assert.equal(bare.headers.get('location'), '/mount/')
      assert.equal((await fetch(`${base}/mount/api/config`)).status, 200)
      assert.equal(await (await fetch(`${base}/other`)).text(), 'next')
      assert.deepEqual(nextCalls, ['/other'])
    } finally {
      express.closeAllConnections()
      await new Promise((resolve) => express.close(resolve))
    }
  })

  it('shares one status read among concurrent pages', async (t) => {
    let reads = 0
    const counting = {
      ...admin,
      status: () => {
        reads++
        return admin.status()
      },
    }
    const dashboard = await startDashboard({ admin: counting })
    t.after(() => dashboard.close())
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => fetch(new URL('api/status', dashboard.url)).then((r) => r.json())),
    )
    assert.equal(answers.length, 20)
    assert.equal(reads, 1, 'twenty polls at once cost one read')
    await new Promise((resolve) => setTimeout(resolve, 1100))
    await fetch(new URL('api/status', dashboard.url)).then((r) => r.json())
    assert.equal(reads, 2, 'a poll after the reuse window reads again')
  })

  it('answers 503 with the fix when the database says so (an outbox never migrated)', async (t) => {
    const unmigrated = uniqueName('ke_dash_none')
    const other = createPgOutbox({
      topics: { events: defineTopic<Event>({ name: topicName, key: (e) => e.key }) },
      schema: unmigrated,
      kafka: { brokers },
    })
    const dashboard = await startDashboard({ admin: other.admin(DATABASE_URL) })
    t.after(() => dashboard.close())
    const response = await fetch(new URL('api/dead-letters', dashboard.url))
    assert.equal(response.status, 503)
    const { error } = (await response.json()) as ErrorBody
    assert.equal(error.code, 'KE_NOT_MIGRATED')
    assert.match(error.message, /never migrated.*run .*migrate/)
  })

  it('validates its arguments and says how to fix them', async () => {
    const invalid = (pattern: RegExp) => (error: unknown) =>
      isKEntityError(error, 'KE_INVALID_ARGUMENT') && pattern.test((error as Error).message)
    assert.throws(() => dashboardHandler({} as never), invalid(/needs an OutboxAdmin/))
    assert.throws(
      () => dashboardHandler(admin, { basePath: 'ops' }),
      invalid(/'basePath' must be a path like '\/outbox'/),
    )
    assert.throws(() => dashboardHandler(admin, { basePath: '/ops/' }), invalid(/no trailing slash/))
    assert.throws(() => dashboardHandler(admin, { refreshMs: 10 }), invalid(/'refreshMs'/))
    assert.throws(() => dashboardHandler(admin, { delivered: 3 as never }), invalid(/'delivered'/))
    await assert.rejects(startDashboard({ admin, port: -1 }), invalid(/'port'/))
    await assert.rejects(startDashboard({ admin, port: server.port }), invalid(/already in use/))
  })
})

async function launchChromium() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Chromium's own background traffic has nowhere to go on a machine without internet.
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
}

describe('dashboard page in headless Chromium', { skip: noChromium }, () => {
  it('says so when the status cannot be read, and keeps trying', async (t) => {
    const unmigrated = uniqueName('ke_dash_none')
    const other = createPgOutbox({
      topics: { events: defineTopic<Event>({ name: topicName, key: (e) => e.key }) },
      schema: unmigrated,
      kafka: { brokers },
    })
    const dashboard = await startDashboard({
      admin: other.admin(DATABASE_URL),
      refreshMs: 500,
    })
    t.after(() => dashboard.close())
    const browser = await launchChromium()
    t.after(() => browser.close())
    const page = await browser.newPage()
    await page.goto(dashboard.url)
    await page.locator('#connection.failing', { hasText: 'status read failed' }).waitFor()
    assert.match((await page.locator('#updated').textContent()) ?? '', /does not exist/)
    await page
      .locator('#dead-message', { hasText: /Could not read the dead letters: .*never migrated/ })
      .waitFor()
  })

  it('shows the backlog move, drains it, and replays a dead letter by clicking', async (t) => {
    const dashboard = await startDashboard({ admin, refreshMs: 500, delivered: () => delivered })
    t.after(() => dashboard.close())
    const browser = await launchChromium()
    t.after(() => browser.close())
    const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } })
    const problems: string[] = []
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text())
    })
    page.on('pageerror', (error) => problems.push(error.message))
    await page.goto(dashboard.url)

    // Functions run in the page, never strings: the page's CSP forbids eval, and a string
    // predicate is eval'ed. PageGlobals gives them types, since this project's typecheck has no DOM.
    const text = async (selector: string) => (await page.locator(selector).textContent()) ?? ''
    const shows = (id: string, value: string) =>
      page.waitForFunction(
        ([id, value]) =>
          (globalThis as unknown as PageGlobals).document.getElementById(id)?.textContent === value,
        [id, value] as const,
      )
    const backlog = () =>
      page.evaluate(
        () => (globalThis as unknown as PageGlobals).kEntityDashboard.charts.backlog.data[1] ?? [],
      )
    await shows('pending', '0')
    await page.locator(`#dead-letters tbody tr[data-id="${deadLetterId}"]`).waitFor()
    assert.equal(await text('#dead'), '1')

    await produce(Array.from({ length: 40 }, (_, i) => ({ id: `m${i}`, key: `k${i % 4}` })))
    await shows('pending', '40')
    await page.waitForFunction(
      () => (globalThis as unknown as PageGlobals).kEntityDashboard.charts.backlog.data[1]?.at(-1) === 40,
    )
    const before = await backlog()
    assert.ok(before.includes(0) && before.at(-1) === 40, `the backlog chart went from 0 to 40: ${before}`)
    assert.equal(await text('#topics tbody tr:first-child td:nth-child(1)'), topicName)
    assert.equal(await text('#topics tbody tr:first-child td:nth-child(2)'), '40')

    await drain()
    await shows('pending', '0')
    await page.waitForFunction(() =>
      (globalThis as unknown as PageGlobals).kEntityDashboard.samples.some((s) => (s.sent ?? 0) > 0),
    )
    assert.equal((await backlog()).at(-1), 0)

    const folder = mkdtempSync(join(tmpdir(), 'k-entity-dashboard-'))
    const shots = [join(folder, 'dashboard.png'), join(folder, 'dashboard-after-replay.png')] as const
    await page.screenshot({ path: shots[0], fullPage: true })
    await page.locator(`#dead-letters tbody tr[data-id="${deadLetterId}"] button.replay`).click()
    await page.locator('#confirm').waitFor({ state: 'visible' })
    assert.match(await text('#confirm-text'), new RegExp(`Replay dead letter ${deadLetterId}\\?`))
    await page.locator('#confirm-ok').click()
    await page.waitForFunction(() =>
      /Replayed 1 of 1/.test(
        (globalThis as unknown as PageGlobals).document.getElementById('dead-message')?.textContent ?? '',
      ),
    )

    // In the database: the dead letter is gone and its message is back in the outbox, whole.
    assert.deepEqual(await sql(`SELECT count(*)::int AS n FROM "${schema}"."outbox_dead_letters"`), [
      { n: 0 },
    ])
    const back = await sql<{ topic: string; bytes: number }>(
      `SELECT topic, length(value) AS bytes FROM "${schema}"."outbox"`,
    )
    assert.equal(back.length, 1)
    assert.equal(back[0]?.topic, topicName)
    assert.ok((back[0]?.bytes ?? 0) > 20_000)
    await shows('pending', '1')
    await page.locator('#dead-letters tbody', { hasText: 'No dead letters' }).waitFor({ timeout: 5000 })

    await page.screenshot({ path: shots[1], fullPage: true })
    for (const shot of shots) console.log(`dashboard screenshot: ${shot} (${statSync(shot).size} bytes)`)
    assert.deepEqual(problems, [], 'no script errors or CSP violations in the page')
  })
})
