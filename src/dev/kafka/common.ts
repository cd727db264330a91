// Settings and helpers every part of the test broker launcher shares.
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { ErrorCodes, KEntityError } from '../../core/errors.ts'

export const execFileAsync = promisify(execFile)

/**
 * The package's root (a clone, or node_modules/k-entity): src/dev/kafka and dist/dev/kafka are
 * both three levels down. The XML files are read from src/, which ships, as tsc copies no XML.
 */
export const REPO_ROOT = resolve(import.meta.dirname, '..', '..', '..')
export const POM = join(REPO_ROOT, 'src', 'dev', 'kafka', 'pom.xml')
export const LOG4J_CONFIG = join(REPO_ROOT, 'src', 'dev', 'kafka', 'log4j2.xml')
export const READY_TIMEOUT_MS = 90_000
export const STOP_TIMEOUT_MS = 20_000
export const LOG_TAIL_LINES = 40
export const HOST = '127.0.0.1'

export const KAFKA_VERSION = readPomProperty('kafka.version')

function readPomProperty(name: string): string {
  const match = new RegExp(`<${name}>([^<]+)</${name}>`).exec(readFileSync(POM, 'utf8'))
  if (!match?.[1]) throw brokerError(`${POM} has no <${name}> property`)
  return match[1].trim()
}

/**
 * The development broker could not be set up or run (no Java, no Maven, a port taken, a broker
 * that died): about Kafka and the machine, not a message, so the transport's code.
 */
export function brokerError(message: string): KEntityError {
  return new KEntityError(ErrorCodes.TRANSPORT_FAILED, message)
}

export function log(quiet: boolean | undefined, message: string): void {
  if (!quiet) process.stderr.write(`kafka-broker: ${message}\n`)
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

/** execFile's error message names the command; what the command printed explains the failure. */
export function describeExecError(error: unknown): string {
  const printed = (key: 'stdout' | 'stderr'): string =>
    typeof error === 'object' && error !== null && key in error
      ? String((error as Record<string, unknown>)[key])
      : ''
  return [errorMessage(error), printed('stdout').trimEnd(), printed('stderr').trimEnd()]
    .filter(Boolean)
    .join('\n')
}

export function javaBinary(): string {
  return process.env.JAVA_HOME ? join(process.env.JAVA_HOME, 'bin', 'java') : 'java'
}
