import { Admin } from '@platformatic/kafka'
import { errorChain } from '../core/error-chain.ts'

/**
 * Undefined when a broker of `brokers` answers a metadata request within `timeoutMs`, else why
 * not. A relay pointed at a wrong address would otherwise retry quietly forever.
 */
export async function probeKafka(brokers: string[], timeoutMs = 5000): Promise<string | undefined> {
  const admin = new Admin({
    clientId: 'k-entity-cli',
    bootstrapBrokers: brokers,
    retries: 0,
    connectTimeout: timeoutMs,
    requestTimeout: timeoutMs,
  })
  try {
    await admin.metadata({ topics: [] })
    return undefined
  } catch (error) {
    const chain = errorChain(error)
    const code = chain.map((e) => e.code).find((c) => typeof c === 'string' && /^E[A-Z]+$/.test(c))
    return typeof code === 'string'
      ? code
      : chain.map((e) => String(e.message ?? '')).find(Boolean) || 'no answer'
  } finally {
    await admin.close().catch(() => undefined)
  }
}

/** `--brokers` or `KAFKA_BROKERS` as a list of host:port. */
export function brokersOf(value: string | undefined): string[] | undefined {
  const text = value ?? (process.env.KAFKA_BROKERS || undefined)
  if (text === undefined) return undefined
  return text
    .split(',')
    .map((broker) => broker.trim())
    .filter(Boolean)
}
