/**
 * Generates a test Prisma client from one of this folder's schemas on first use, and loads it.
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
import type { ITXClientDenyList } from '@prisma/client/runtime/client'

export const PRISMA_ROOT = resolve(import.meta.dirname, '..')

export interface OrderRow {
  id: string
  customer: string
}

/** The slice of a generated client the tests use; mirrors Prisma's own typing of the two clients. */
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

/** The generated `PrismaClient` class, constructed with a driver adapter. */
export type TestPrismaClientClass<Adapter> = new (options: { adapter: Adapter }) => TestPrismaClient

/**
 * Runs `prisma generate` for `schema` (relative to the repository root) unless `output` already
 * holds a client generated from the same schema by the same Prisma version, then imports it.
 */
export async function generatePrismaClient<Adapter>(
  schema: string,
  output: string,
): Promise<TestPrismaClientClass<Adapter>> {
  const schemaPath = join(PRISMA_ROOT, schema)
  const outputPath = join(PRISMA_ROOT, output)
  const stampPath = join(outputPath, '.k-entity-stamp')
  const require = createRequire(import.meta.url)
  const prismaPackage = require.resolve('prisma/package.json')
  const { version } = JSON.parse(await readFile(prismaPackage, 'utf8')) as { version: string }
  const stamp = createHash('sha256')
    .update(version)
    .update(await readFile(schemaPath))
    .digest('hex')
  const previous = await readFile(stampPath, 'utf8').catch(() => '')
  if (previous !== stamp) {
    await promisify(execFile)(
      process.execPath,
      [join(prismaPackage, '..', 'build', 'index.js'), 'generate', '--schema', schemaPath],
      {
        cwd: PRISMA_ROOT,
        env: {
          ...process.env,
          PRISMA_SCHEMA_ENGINE_BINARY: join(PRISMA_ROOT, 'prisma', 'no-schema-engine.sh'),
          PRISMA_HIDE_UPDATE_MESSAGE: '1',
          CHECKPOINT_DISABLE: '1',
        },
      },
    )
    await writeFile(stampPath, stamp)
  }
  const module = (await import(join(outputPath, 'client.ts'))) as {
    PrismaClient: TestPrismaClientClass<Adapter>
  }
  return module.PrismaClient
}
