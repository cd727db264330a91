// Where the benchmark runs: database, Kafka, names, and the machine description for the report.
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { cpus, loadavg, totalmem } from 'node:os'
import { Admin } from '@platformatic/kafka'
import pg from 'pg'
import { KAFKA_VERSION } from '../../scripts/kafka-broker.ts'

export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test'

/** Every scenario creates its topics with this many partitions. */
export const PARTITIONS = 8

/** Lower-case and unique per call: safe as a schema, table or (with '-') topic name. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`
}

export function topicName(prefix: string): string {
  return uniqueName(`bench-${prefix}`).replaceAll('_', '-')
}

export async function withClient<R>(fn: (client: pg.Client) => Promise<R>): Promise<R> {
  const client = new pg.Client({ connectionString: DATABASE_URL, application_name: 'k-entity-bench' })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

export async function dropSchema(schema: string): Promise<void> {
  await withClient((client) => client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`))
}

export async function createTopic(
  brokers: string[],
  name: string,
  configs: Record<string, string> = {},
): Promise<void> {
  const admin = new Admin({ clientId: 'k-entity-bench', bootstrapBrokers: brokers })
  try {
    await admin.createTopics({
      topics: [name],
      partitions: PARTITIONS,
      replicas: 1,
      configs: Object.entries(configs).map(([configName, value]) => ({ name: configName, value })),
    })
  } finally {
    await admin.close()
  }
}

export async function deleteTopics(brokers: string[], names: string[]): Promise<void> {
  if (names.length === 0) return
  const admin = new Admin({ clientId: 'k-entity-bench', bootstrapBrokers: brokers })
  try {
    await admin.deleteTopics({ topics: names })
  } catch {
    // Cleanup only: a topic that cannot be deleted is harmless on a benchmark broker.
  } finally {
    await admin.close().catch(() => {})
  }
}

/**
 * Collects what a scenario created (schemas, topics) so it is removed even when the scenario
 * fails half-way.
 */
export class Resources {
  readonly #brokers: string[]
  readonly #schemas: string[] = []
  readonly #topics: string[] = []

  constructor(brokers: string[]) {
    this.#brokers = brokers
  }

  schema(prefix: string): string {
    const name = uniqueName(`bench_${prefix}`)
    this.#schemas.push(name)
    return name
  }

  async topic(prefix: string, configs?: Record<string, string>): Promise<string> {
    const name = topicName(prefix)
    this.#topics.push(name)
    await createTopic(this.#brokers, name, configs)
    return name
  }

  async release(): Promise<void> {
    for (const schema of this.#schemas.splice(0)) await dropSchema(schema).catch(() => {})
    await deleteTopics(this.#brokers, this.#topics.splice(0))
  }
}

/** The 1, 5 and 15 minute load averages, for printing beside a figure. */
export function loadAverage(): string {
  return loadavg()
    .map((value) => value.toFixed(2))
    .join(' ')
}

export interface MachineInfo {
  nproc: number
  cpuModel: string
  memoryGiB: number
  node: string
  postgres: string
  kafka: string
  loadAverage: string
}

export async function machineInfo(): Promise<MachineInfo> {
  const postgres = await withClient(async (client) => {
    const result = await client.query('SHOW server_version')
    return String(result.rows[0]?.server_version ?? 'unknown')
  }).catch(() => 'unreachable')
  let loadAverage = ''
  try {
    loadAverage = execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).trim()
  } catch {
    loadAverage = 'unknown'
  }
  return {
    nproc: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    postgres,
    kafka: KAFKA_VERSION,
    loadAverage,
  }
}
