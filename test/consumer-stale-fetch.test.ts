// A fetch a member sent before a rebalance can be answered after it, with records of a partition
// the rebalance gave to another member. Handling them would apply a later offset of that
// partition before the new owner applies the earlier ones (committed ⇒ still applied once, but out
// of key order across processes). The member must drop them.
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { consume } from '../src/consumer/consume.ts'
import { defineTopic } from '../src/core/topic.ts'
import { brokers, createTopic, deleteTopic, produceRaw, uniqueName, waitFor } from './consumer/kafka.ts'

const list = brokers()
const kafka = { brokers: list ?? [], clientId: 'k-entity-consumer-test' }

describe('consumer: fetches answered after a rebalance', {
  skip: list === undefined ? 'KAFKA_BROKERS not set' : false,
}, () => {
  const topics: string[] = []
  after(async () => {
    for (const name of topics) await deleteTopic(list as string[], name)
  })

  it('a member never handles a record of a partition the rebalance took away from it', async () => {
    const name = uniqueName('ke-stale-fetch')
    await createTopic(list as string[], name, 2)
    topics.push(name)
    const events = defineTopic<{ id: string; phase: string }>({ name, key: (event) => event.id })
    const groupId = uniqueName('g')
    const handled: Array<{ who: string; partition: number; offset: bigint; phase: string }> = []
    const member = (who: string, maxWaitMs: number) =>
      consume(events, {
        kafka,
        logger: false,
        groupId,
        maxWaitMs,
        sessionTimeoutMs: 6000,
        commitIntervalMs: 0,
        handler: async (message) => {
          handled.push({
            who,
            partition: message.partition,
            offset: message.offset,
            phase: message.value?.phase ?? '',
          })
        },
      })
    const keys = Array.from({ length: 16 }, (_, i) => `k${i}`)
    const send = (phase: string) =>
      produceRaw(
        list as string[],
        name,
        keys.map((key) => ({ key, value: JSON.stringify({ id: key, phase }) })),
      )
    // A long poll: the fetch A sends once it has read the first records is still waiting for data
    // when B joins and the group rebalances.
    const a = member('a', 12_000)
    let b: ReturnType<typeof member> | undefined
    try {
      await send('before')
      await waitFor(() => handled.length >= keys.length, 20_000, 'a reads the first records')
      await new Promise((resolve) => setTimeout(resolve, 300))
      b = member('b', 100)
      await b.start()
      // The rebalance is over once B reads something it was given; then records arrive that the
      // fetch A sent before the rebalance can answer with.
      await send('probe')
      const probe = () => handled.filter((h) => h.phase === 'probe')
      await waitFor(
        () => new Set(probe().map((h) => h.partition)).size === 2,
        30_000,
        'both partitions after the rebalance',
      )
      await send('after')
      await waitFor(
        () => handled.filter((h) => h.phase === 'after').length >= keys.length,
        30_000,
        'the records sent after the rebalance',
      )
      await new Promise((resolve) => setTimeout(resolve, 500))
    } finally {
      await a.close()
      await b?.close()
    }
    const owners = new Map<number, Set<string>>()
    for (const h of handled.filter((h) => h.phase !== 'before')) {
      const set = owners.get(h.partition) ?? new Set<string>()
      set.add(h.who)
      owners.set(h.partition, set)
    }
    const shared = [...owners].filter(([, who]) => who.size > 1)
    assert.deepEqual(
      shared.map(([partition, who]) => `${partition}: ${[...who].join(',')}`),
      [],
      `after the rebalance each partition is handled by one member: ${JSON.stringify(handled.filter((h) => h.phase !== 'before').map((h) => `${h.who} p${h.partition}@${h.offset} ${h.phase}`))}`,
    )
  })
})
