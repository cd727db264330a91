// Asking a running node whether it is ours and ready.
import { Admin } from '@platformatic/kafka'
import { brokerError } from './common.ts'

/** The cluster id a broker reports, or an error if nothing answers in time. */
export async function queryClusterId(brokers: string, timeoutMs: number): Promise<string> {
  const admin = new Admin({
    clientId: 'k-entity-kafka-broker',
    bootstrapBrokers: [brokers],
    retries: 0,
    connectTimeout: timeoutMs,
    requestTimeout: timeoutMs,
  })
  try {
    const metadata = await admin.metadata({ topics: [] })
    if (metadata.brokers.size === 0) throw brokerError('the broker reports no live brokers yet')
    return metadata.id
  } finally {
    await admin.close().catch(() => undefined)
  }
}
