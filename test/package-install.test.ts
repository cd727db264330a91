// What a user gets from `npm install k-entity pg`: the package is packed from this checkout (its
// prepack builds dist/), installed into an empty app with the npm registry's pg, and the README's
// node-postgres quick start runs from it as plain JavaScript on plain Node (no type stripping),
// against the real database and broker, reading its message back through `k-entity/testing`.
// Every `exports` subpath must load from the installed copy, and the typings must resolve for a
// TypeScript app. The Node and npm are the ones running this test, so the Node-22 CI run checks
// the engines floor too.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join, resolve } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { DATABASE_URL, dropSchema, kafkaBrokers, uniqueName } from './support/env.ts'

const run = promisify(execFile)
const REPO_ROOT = resolve(import.meta.dirname, '..')
const PACKAGE = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
  name: string
  exports: Record<string, string | { types: string; default: string }>
  peerDependencies: Record<string, string>
}

/** npm's CLI script for this Node: the one shipped beside it, else the one npm runs us with or on PATH. */
function npmCli(): string {
  const beside = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js')
  if (existsSync(beside)) return beside
  const viaNpm = process.env.npm_execpath
  if (viaNpm?.endsWith('.js') && existsSync(viaNpm)) return viaNpm
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, 'npm')
    if (existsSync(candidate)) return realpathSync(candidate)
  }
  throw new Error('npm not found beside this Node nor on PATH')
}

/** The environment of every child: this Node first on PATH, none of the parent npm's settings. */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [name, value] of Object.entries(process.env)) {
    // npm hands its settings to scripts as npm_* variables; a child npm would take
    // npm_config_local_prefix and the like as its own and work on this repository, not the app.
    if (/^npm_/i.test(name) && !/^npm_config_(cache|registry|userconfig|nodedir)$/i.test(name)) continue
    // Set by the test runner for its own subprocesses; the app is not one.
    if (name === 'NODE_TEST_CONTEXT') continue
    env[name] = value
  }
  env.PATH = `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ''}`
  return { ...env, ...extra }
}

const NPM = npmCli()

async function npm(args: string[], cwd: string): Promise<string> {
  try {
    const { stdout } = await run(process.execPath, [NPM, ...args], {
      cwd,
      env: childEnv(),
      maxBuffer: 64 * 1024 * 1024,
      timeout: 300_000,
    })
    return stdout
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string }
    throw new Error(`npm ${args.join(' ')} failed in ${cwd}:\n${stdout ?? ''}\n${stderr ?? ''}`, {
      cause: error,
    })
  }
}

/** Runs a script of the app on this Node with type stripping off: dist/ must be plain JavaScript. */
async function node(script: string, cwd: string, env: Record<string, string> = {}): Promise<string> {
  try {
    const { stdout } = await run(process.execPath, ['--no-experimental-strip-types', script], {
      cwd,
      env: childEnv(env),
      maxBuffer: 16 * 1024 * 1024,
      timeout: 180_000,
    })
    return stdout
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string }
    throw new Error(`node ${script} failed:\n${stdout ?? ''}\n${stderr ?? ''}`, { cause: error })
  }
}

/** The JSON line a script of the app printed last. */
function lastJson<T>(stdout: string): T {
  const lines = stdout.trim().split('\n')
  return JSON.parse(lines[lines.length - 1] ?? 'null') as T
}

function targets(): { subpath: string; files: string[] }[] {
  return Object.entries(PACKAGE.exports).map(([subpath, target]) => ({
    subpath,
    files: typeof target === 'string' ? [target] : [target.types, target.default],
  }))
}

// The README's quick start, in JavaScript, on its own schema and topic; it reads the message
// back with the package's own reader and prints what Kafka holds.
const QUICK_START_APP = `
import pg from 'pg'
import { defineTopic } from 'k-entity'
import { createPgOutbox } from 'k-entity/pg'
import { readTopic } from 'k-entity/testing'

const { DATABASE_URL, KAFKA_BROKERS, APP_SCHEMA, APP_TOPIC } = process.env
const brokers = KAFKA_BROKERS.split(',')

const orderCreated = defineTopic({
  name: APP_TOPIC,
  key: (event) => event.customerId,
  headers: { 'event-type': 'OrderCreated' },
  partitions: 1,
})
const outbox = createPgOutbox({
  topics: { orderCreated },
  kafka: { brokers },
  schema: APP_SCHEMA,
})
await outbox.migrate(DATABASE_URL)
const topicsReport = await outbox.ensureTopics()

const pool = new pg.Pool({ connectionString: DATABASE_URL })
await pool.query(\`CREATE TABLE "\${APP_SCHEMA}".orders (id text PRIMARY KEY, customer_id text, total int)\`)
await outbox.transaction(pool, async (client, topics) => {
  await client.query(\`INSERT INTO "\${APP_SCHEMA}".orders (id, customer_id, total) VALUES ($1, $2, $3)\`, ['o-1', 'c-7', 42])
  await topics.orderCreated.produce({ orderId: 'o-1', customerId: 'c-7', total: 42 })
})

const relay = outbox.relay({ connection: DATABASE_URL, mode: 'exclusive', pollingInterval: 1000, maxMessagesPerPoll: 500 })
await relay.start()
let messages
try {
  messages = await readTopic({ brokers, topic: APP_TOPIC, expectedCount: 1, idleTimeoutMs: 30000, timeoutMs: 60000 })
} finally {
  await relay.stop({ timeout: 10000 })
  await pool.end()
}
console.log(JSON.stringify({
  created: topicsReport.created.map((created) => created.topic),
  messages: messages.map((message) => ({
    key: message.key?.toString('utf8') ?? null,
    value: message.value?.toString('utf8') ?? null,
    headers: message.headers.map(([name, value]) => [name, value?.toString('utf8') ?? null]),
  })),
}))
`

// Loads every subpath the package exports, as an app would, and reports how each went.
const EXPORTS_APP = `
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

const manifest = createRequire(import.meta.url).resolve('k-entity/package.json')
const { exports } = JSON.parse(readFileSync(manifest, 'utf8'))
const results = []
for (const subpath of Object.keys(exports)) {
  const specifier = subpath === '.' ? 'k-entity' : 'k-entity/' + subpath.slice(2)
  try {
    const module = subpath.endsWith('.json')
      ? await import(specifier, { with: { type: 'json' } })
      : await import(specifier)
    results.push({ subpath, ok: true, names: Object.keys(module).length })
  } catch (error) {
    results.push({ subpath, ok: false, code: error.code ?? null, message: String(error.message) })
  }
}
console.log(JSON.stringify(results))
`

// The dashboard from the installed copy: its page lives in src/dashboard/page/ and its chart
// library in the app's node_modules, both found from dist/. The admin is never called by these
// requests (only the static files are fetched), so an empty stand-in is enough here.
const DASHBOARD_APP = `
import { startDashboard } from 'k-entity/dashboard'

const unused = () => { throw new Error('not called when only the page is fetched') }
const admin = { database: 'none', status: unused, deadLetters: { list: unused, count: unused, replay: unused, purge: unused } }
const dashboard = await startDashboard({ admin })
const results = {}
try {
  for (const path of ['', 'dashboard.js', 'dashboard.css', 'uplot.js', 'uplot.css']) {
    const response = await fetch(new URL(path, dashboard.url))
    results[path || '/'] = { status: response.status, bytes: (await response.arrayBuffer()).byteLength }
  }
} finally {
  await dashboard.close()
}
console.log(JSON.stringify(results))
`

// A TypeScript app on the typings: the @ts-expect-error lines fail the check if a declaration
// file's imports did not resolve (the types would be any, and the lines would compile).
const TYPESCRIPT_APP = `
import { defineTopic } from 'k-entity'
import { createPgOutbox } from 'k-entity/pg'
import { type ConsumedMessage, readTopic } from 'k-entity/testing'

interface OrderCreated { orderId: string; customerId: string; total: number }
const orderCreated = defineTopic<OrderCreated>({ name: 'orders.created', key: (event) => event.customerId })
// @ts-expect-error OrderCreated has no 'region'
defineTopic<OrderCreated>({ name: 'orders.created', key: (event) => event.region })
const outbox = createPgOutbox({ topics: { orderCreated }, kafka: { brokers: ['127.0.0.1:9092'] } })
export const relay = outbox.relay({ connection: 'postgres://localhost/app' })
// @ts-expect-error stop() takes options, not a number
export const stopped: Promise<void> = relay.stop(10)
export const read: Promise<ConsumedMessage[]> = readTopic({ brokers: ['127.0.0.1:9092'], topic: 't' })
`

describe('the packed package, installed into an empty app', () => {
  let work: string
  let app: string
  let tarballEntries: string[]
  const schema = uniqueName('ke_pkg')

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'k-entity-package-'))
    // A file left in dist/ by an older build must not ship: prepack cleans first.
    await mkdir(join(REPO_ROOT, 'dist'), { recursive: true })
    await writeFile(join(REPO_ROOT, 'dist', 'stale-leftover.js'), 'throw new Error("stale")\n')
    const packs = join(work, 'packs')
    await mkdir(packs)
    await npm(['pack', '--pack-destination', packs], REPO_ROOT)
    const [tarball, ...others] = await readdir(packs)
    assert.ok(
      tarball !== undefined && others.length === 0,
      `expected one tarball, got ${[tarball, ...others]}`,
    )
    const { stdout } = await run('tar', ['-tzf', join(packs, tarball)], { maxBuffer: 16 * 1024 * 1024 })
    tarballEntries = stdout.split('\n').filter(Boolean)

    app = join(work, 'app')
    await mkdir(app)
    await writeFile(
      join(app, 'package.json'),
      `${JSON.stringify({ name: 'k-entity-install-check', private: true, type: 'module' }, null, 2)}\n`,
    )
    await npm(
      [
        'install',
        '--no-audit',
        '--no-fund',
        '--prefer-offline',
        '--loglevel=error',
        join(packs, tarball),
        'pg',
      ],
      app,
    )
  })

  after(async () => {
    await dropSchema(schema)
    if (work !== undefined) await rm(work, { recursive: true, force: true })
  })

  it('ships the built entry points, LICENSE and the linked docs, and no tests or stale files', () => {
    const files = new Set(tarballEntries.map((entry) => entry.replace(/^package\//, '')))
    for (const { subpath, files: wanted } of targets()) {
      for (const file of wanted) {
        assert.ok(
          files.has(file.replace(/^\.\//, '')),
          `exports[${JSON.stringify(subpath)}] -> ${file} is not in the package`,
        )
      }
    }
    const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8')
    const linkedDocs = [...readme.matchAll(/\]\(((?!https?:)[^)#\s]+\.md)\)/g)].map(
      (match) => match[1] as string,
    )
    assert.ok(linkedDocs.length >= 3, 'the README links to its docs')
    for (const file of ['LICENSE', 'README.md', 'package.json', ...new Set(linkedDocs)]) {
      assert.ok(files.has(file), `${file} is not in the package`)
    }
    for (const doc of readdirSync(join(REPO_ROOT, 'docs'), { recursive: true, encoding: 'utf8' })) {
      const path = `docs/${doc.replaceAll('\\', '/')}`
      if (path.endsWith('.md')) assert.ok(files.has(path), `${path} is not in the package`)
    }
    const unwanted = [...files].filter(
      (file) =>
        /^(test|bench|chaos|scripts|examples|prisma)\//.test(file) || /\.test\.[cm]?[jt]s$/.test(file),
    )
    assert.deepEqual(unwanted, [], 'tests and tooling must not ship')
    assert.ok(!files.has('dist/stale-leftover.js'), 'prepack must clean dist/ before building')
  })

  it('installs the typings of every exports target', () => {
    const installed = join(app, 'node_modules', PACKAGE.name)
    for (const { subpath, files: wanted } of targets()) {
      for (const file of wanted) assert.ok(existsSync(join(installed, file)), `${subpath}: ${file} missing`)
    }
  })

  it("runs the README's node-postgres quick start as plain JavaScript: the message reaches Kafka", async () => {
    const topic = uniqueName('ke_pkg_orders')
    await writeFile(join(app, 'quick-start.mjs'), QUICK_START_APP)
    const stdout = await node('quick-start.mjs', app, {
      DATABASE_URL,
      KAFKA_BROKERS: kafkaBrokers().join(','),
      APP_SCHEMA: schema,
      APP_TOPIC: topic,
    })
    const { created, messages } = lastJson<{
      created: string[]
      messages: { key: string | null; value: string | null; headers: [string, string | null][] }[]
    }>(stdout)
    assert.deepEqual(created, [topic], 'ensureTopics() creates the declared topic')
    assert.equal(messages.length, 1, `expected the one message on ${topic}, got ${JSON.stringify(messages)}`)
    const [message] = messages
    assert.equal(message?.key, 'c-7')
    assert.deepEqual(JSON.parse(message?.value ?? 'null'), { orderId: 'o-1', customerId: 'c-7', total: 42 })
    assert.deepEqual(
      message?.headers.filter(([name]) => name === 'event-type'),
      [['event-type', 'OrderCreated']],
    )
  })

  it('loads every exports subpath; one whose peer is not installed fails only for that peer', async () => {
    await writeFile(join(app, 'exports.mjs'), EXPORTS_APP)
    const results = lastJson<{ subpath: string; ok: boolean; code?: string | null; message?: string }[]>(
      await node('exports.mjs', app),
    )
    assert.deepEqual(
      results.map((result) => result.subpath),
      Object.keys(PACKAGE.exports),
    )
    // The app installed pg and nothing else: these need no other peer.
    for (const subpath of ['.', './pg', './kafka', './testing', './admin', './package.json']) {
      const result = results.find((entry) => entry.subpath === subpath)
      assert.ok(result?.ok, `${subpath} must load: ${JSON.stringify(result)}`)
    }
    const peers = Object.keys(PACKAGE.peerDependencies)
    for (const result of results) {
      if (result.ok) continue
      const missing = /^Cannot find package '([^']+)' imported from (.+)$/.exec(result.message ?? '')
      const name = missing?.[1]
        ?.split('/')
        .slice(0, missing[1].startsWith('@') ? 2 : 1)
        .join('/')
      assert.ok(
        result.code === 'ERR_MODULE_NOT_FOUND' && name !== undefined && peers.includes(name) && name !== 'pg',
        `${result.subpath} failed other than for a missing optional peer: ${result.code} ${result.message}`,
      )
      assert.match(missing?.[2] ?? '', /node_modules[/\\]k-entity[/\\]dist[/\\]/)
    }
  })

  it('serves the dashboard page and its chart library from the installed copy', async () => {
    await writeFile(join(app, 'dashboard.mjs'), DASHBOARD_APP)
    const results = lastJson<Record<string, { status: number; bytes: number }>>(
      await node('dashboard.mjs', app),
    )
    for (const [path, result] of Object.entries(results)) {
      assert.ok(result.status === 200 && result.bytes > 100, `${path}: ${JSON.stringify(result)}`)
    }
    assert.deepEqual(Object.keys(results), ['/', 'dashboard.js', 'dashboard.css', 'uplot.js', 'uplot.css'])
  })

  it('runs the k-entity command from the installed package as plain JavaScript', async () => {
    const bin = join(app, 'node_modules', PACKAGE.name, 'bin', 'k-entity.js')
    assert.ok(existsSync(join(app, 'node_modules', '.bin', 'k-entity')), 'npm links the bin')
    const help = await run(process.execPath, ['--no-experimental-strip-types', bin, '--help'], {
      cwd: app,
      env: childEnv(),
    })
    assert.match(help.stdout, /^Usage: k-entity <command>/)
    const cliSchema = uniqueName('ke_pkg_cli')
    try {
      const args = ['migrate', '--json', '--schema', cliSchema]
      const { stdout } = await run(process.execPath, ['--no-experimental-strip-types', bin, ...args], {
        cwd: app,
        env: childEnv({ DATABASE_URL }),
      })
      assert.deepEqual((JSON.parse(stdout) as { applied: number[] }).applied, [1, 2, 3])
      const status = await run(
        process.execPath,
        ['--no-experimental-strip-types', bin, 'status', '--json', '--schema', cliSchema],
        { cwd: app, env: childEnv({ DATABASE_URL }) },
      )
      assert.equal((JSON.parse(status.stdout) as { pending: number }).pending, 0)
    } finally {
      await dropSchema(cliSchema)
    }
    // The development broker's launcher ships: asked about a port where nothing listens, it says so.
    const kafka = await run(process.execPath, ['--no-experimental-strip-types', bin, 'kafka', 'status'], {
      cwd: app,
      env: childEnv({ KAFKA_PORT: '1' }),
    }).then(
      () => assert.fail('kafka status must fail where no broker answers'),
      (error: { code?: number; stdout?: string }) => error,
    )
    assert.equal(kafka.code, 1)
    assert.match(kafka.stdout ?? '', /Kafka does not answer at 127\.0\.0\.1:1/)
  })

  it('gives a TypeScript app working typings (the .d.ts imports resolve)', async () => {
    await writeFile(join(app, 'app.mts'), TYPESCRIPT_APP)
    await writeFile(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2023',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          types: [],
        },
        files: ['app.mts'],
      }),
    )
    const tsc = join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
    try {
      await run(process.execPath, [tsc, '-p', 'tsconfig.json'], {
        cwd: app,
        env: childEnv(),
        timeout: 120_000,
      })
    } catch (error) {
      const { stdout, stderr } = error as { stdout?: string; stderr?: string }
      assert.fail(`tsc on a TypeScript app using the package failed:\n${stdout ?? ''}${stderr ?? ''}`)
    }
  })
})
