// Parent side of bench/lib/worker.ts: start child processes, release them together, collect.
import { type ChildProcess, spawn } from 'node:child_process'
import { resolve } from 'node:path'
import type { ChildMessage, Job, WorkerResult } from './worker.ts'

const WORKER = resolve(import.meta.dirname, 'worker.ts')

export class Worker {
  readonly #child: ChildProcess
  readonly result: Promise<WorkerResult>
  readonly ready: Promise<void>
  delivered = 0
  #onProgress: ((delivered: number) => void) | undefined

  /** `module`: another tree's worker.ts (bench/latency-stages.ts runs an earlier relay beside this one). */
  constructor(job: Job, module = WORKER) {
    this.#child = spawn(process.execPath, [module], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, K_ENTITY_BENCH_JOB: JSON.stringify(job) },
    })
    let markReady: () => void = () => {}
    let failReady: (error: Error) => void = () => {}
    this.ready = new Promise<void>((resolveReady, rejectReady) => {
      markReady = resolveReady
      failReady = rejectReady
    })
    this.result = new Promise<WorkerResult>((resolveResult, rejectResult) => {
      let settled = false
      const fail = (error: Error) => {
        if (settled) return
        settled = true
        failReady(error)
        rejectResult(error)
      }
      this.#child.on('message', (raw) => {
        const message = raw as ChildMessage
        if (message.type === 'ready') markReady()
        else if (message.type === 'progress') {
          this.delivered = message.delivered
          this.#onProgress?.(message.delivered)
        } else if (message.type === 'result') {
          settled = true
          resolveResult(message.result)
        } else if (message.type === 'failed') fail(new Error(`${job.kind} worker failed: ${message.error}`))
      })
      this.#child.on('error', (error) => fail(error))
      this.#child.on('exit', (code, signal) =>
        fail(new Error(`${job.kind} worker exited (${signal ?? code}) before reporting a result`)),
      )
    })
    // Rejections are observed through `ready`/`result` by the caller.
    this.ready.catch(() => {})
    this.result.catch(() => {})
  }

  onProgress(listener: (delivered: number) => void): void {
    this.#onProgress = listener
  }

  go(): void {
    this.#child.send({ type: 'go' })
  }

  stop(): void {
    if (this.#child.connected) this.#child.send({ type: 'stop' })
  }

  /** Waits for the child to exit after its result; kills it (by its own pid) if it lingers. */
  async exit(timeoutMs = 15_000): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return
    const exited = new Promise<void>((resolveExit) => this.#child.once('exit', () => resolveExit()))
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), timeoutMs)
    await exited
    clearTimeout(timer)
  }

  kill(): void {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill('SIGKILL')
  }
}

/** Starts workers, waits until all are ready, releases them at once, returns their results. */
export async function runWorkers(
  jobs: Job[],
  control?: (workers: Worker[]) => Promise<void> | void,
): Promise<WorkerResult[]> {
  const workers = jobs.map((job) => new Worker(job))
  try {
    await Promise.all(workers.map((worker) => worker.ready))
    for (const worker of workers) worker.go()
    const controlled = control?.(workers)
    const results = await Promise.all([...workers.map((worker) => worker.result), controlled])
    await Promise.all(workers.map((worker) => worker.exit()))
    return results.slice(0, workers.length) as WorkerResult[]
  } catch (error) {
    for (const worker of workers) worker.kill()
    throw error
  }
}

export async function runWorker(job: Job): Promise<WorkerResult> {
  const [result] = await runWorkers([job])
  return result as WorkerResult
}
