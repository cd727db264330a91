import type { Features } from './features.ts'
import type { ScenarioResult } from './report.ts'

export interface BenchContext {
  full: boolean
  brokers: string[]
  databaseUrl: string
  features: Features
  /** A topic for producers to connect and initialise on before a measurement. */
  warmupTopic: string
  log: (message: string) => void
}

export interface Scenario {
  /** Short name used by --only. */
  id: string
  number: number
  title: string
  run(ctx: BenchContext): Promise<ScenarioResult>
}
