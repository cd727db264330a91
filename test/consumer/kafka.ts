// Topic set-up and raw producing for the consumer tests (real broker from KAFKA_BROKERS).
import { randomBytes } from 'node:crypto'
import { Admin, compatibilityPartitioner, Producer } from '@platformatic/kafka'

export function brokers(): string[] | undefined {
  return process.env.KAFKA_BROKERS?.split(',')
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(5).toString('hex')}`
}

export async function createTopic(list: string[], name: string, partitions: number): Promise<void> {
  const admin = new Admin({ clientId: 'k-entity-consumer-test', bootstrapBrokers: list })
  try {
    await admin.createTopics({ topics: [name], partitions, replicas: 1 })
  } finally {
    await admin.close()
  }
}

export async function deleteTopic(list: string[], name: string): Promise<void> {
  const admin = new Admin({ clientId: 'k-entity-consumer-test', bootstrapBrokers: list })
  try {
    await admin.deleteTopics({ topics: [name] })
  } catch {
    // Left behind: a broker started by `npm test` is thrown away afterwards anyway.
  } finally {
    await admin.close()
  }
}

export interface RawMessage {
  key?: string
  value: Buffer | string | null
  headers?: Record<string, string>
}

/** Sends in order with the Java partitioner, so a key lands where the outbox's relay puts it. */
export async function produceRaw(list: string[], topic: string, messages: RawMessage[]): Promise<void> {
  const producer = new Producer({
    clientId: 'k-entity-consumer-test',
    bootstrapBrokers: list,
    partitioner: compatibilityPartitioner,
    idempotent: true,
    acks: -1,
  })
  try {
    for (let start = 0; start < messages.length; start += 200) {
      await producer.send({
        messages: messages.slice(start, start + 200).map((message) => ({
          topic,
          key: message.key === undefined ? undefined : Buffer.from(message.key),
          value:
            message.value === null
              ? undefined
              : typeof message.value === 'string'
                ? Buffer.from(message.value)
                : message.value,
          headers: new Map(
            Object.entries(message.headers ?? {}).map(([name, value]) => [
              Buffer.from(name),
              Buffer.from(value),
            ]),
          ),
        })),
      })
    }
  } finally {
    await producer.close()
  }
}

export async function waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
