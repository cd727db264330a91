/**
 * The Prisma client of the tests, generated from prisma/schema.prisma on first use.
 *
 * Prisma 7's `prisma-client` generator runs on the WebAssembly schema parser bundled with the
 * CLI, so it works offline. The CLI still insists that the native schema engine is present
 * before `generate` (it downloads it from binaries.prisma.sh, unreachable here) although
 * `generate` never runs it; PRISMA_SCHEMA_ENGINE_BINARY points it at a stub that explains this.
 */
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { PrismaPg } from '@prisma/adapter-pg'
import type { ITXClientDenyList } from '@prisma/client/runtime/client'

const ROOT = resolve(import.meta.dirname, '..')
const SCHEMA = join(ROOT, 'prisma', 'schema.prisma')
const OUTPUT = join(ROOT, '.tools', 'prisma-client')
const STAMP = join(OUTPUT, '.k-entity-stamp')

export interface OrderRow {
  id: string
  customer: string
}

/** The slice of the generated client the tests use; mirrors Prisma's own typing of the two clients. */
export interface TestPrismaClient {
  order: {
    create(args: { data: OrderRow }): PromiseLike<OrderRow>
    count(): PromiseLike<number>
  }
  $executeRawUnsafe(query: string, ...values: unknown[]): PromiseLike<number>
  $queryRawUnsafe<T = unknown>(query: string, ...values: unknown[]): PromiseLike<T>
  $transaction<R>(
    fn: (tx: TestPrismaTransaction) => Promise<R>,
    options?: { maxWait?: number; timeout?: number },
  ): Promise<R>
  $connect(): Promise<void>
  $disconnect(): Promise<void>
}

/** What `prisma.$transaction(async (tx) => ...)` hands out: Prisma's `Omit<PrismaClient, ITXClientDenyList>`. */
export type TestPrismaTransaction = Omit<TestPrismaClient, ITXClientDenyList>

let generated: Promise<new (options: { adapter: PrismaPg }) => TestPrismaClient> | undefined

/** A client on `schema` (PostgreSQL search path of the generated queries) through `@prisma/adapter-pg`. */
export async function createPrismaClient(
  connectionString: string,
  schema: string,
): Promise<TestPrismaClient> {
  generated ??= generate()
  const PrismaClient = await generated
  return new PrismaClient({ adapter: new PrismaPg({ connectionString }, { schema }) })
}

async function generate() {
  const require = createRequire(import.meta.url)
  const prismaPackage = require.resolve('prisma/package.json')
  const { version } = JSON.parse(await readFile(prismaPackage, 'utf8')) as { version: string }
  const stamp = createHash('sha256')
    .update(version)
    .update(await readFile(SCHEMA))
    .digest('hex')
  const previous = await readFile(STAMP, 'utf8').catch(() => '')
  if (previous !== stamp) {
    await promisify(execFile)(
      process.execPath,
      [join(prismaPackage, '..', 'build', 'index.js'), 'generate', '--schema', SCHEMA],
      {
        cwd: ROOT,
        env: {
          ...process.env,
          PRISMA_SCHEMA_ENGINE_BINARY: join(ROOT, 'prisma', 'no-schema-engine.sh'),
          PRISMA_HIDE_UPDATE_MESSAGE: '1',
          CHECKPOINT_DISABLE: '1',
        },
      },
    )
    await writeFile(STAMP, stamp)
  }
  const module = (await import(join(OUTPUT, 'client.ts'))) as {
    PrismaClient: new (options: { adapter: PrismaPg }) => TestPrismaClient
  }
  return module.PrismaClient
}
