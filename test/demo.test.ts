import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { DATABASE_URL, kafkaBrokers } from './support/env.ts'

const run = promisify(execFile)
const demo = fileURLToPath(new URL('../examples/demo.ts', import.meta.url))

describe('npm run demo', () => {
  for (const db of ['postgres', 'pglite']) {
    it(`on ${db}: everything committed arrives, nothing rolled back does`, async () => {
      const { stdout } = await run(process.execPath, [demo, '--seconds', '2', '--db', db], {
        env: { ...process.env, DATABASE_URL, KAFKA_BROKERS: kafkaBrokers().join(',') },
        timeout: 240_000,
      })
      const figure = (name: string) => Number(new RegExp(`^${name}\\s+(\\d+)`, 'm').exec(stdout)?.[1])
      assert.ok(figure('committed') > 0, stdout)
      assert.equal(figure('delivered'), figure('committed'), stdout)
      assert.equal(figure('lost'), 0, stdout)
      assert.equal(figure('phantom'), 0, stdout)
      assert.equal(figure('out-of-order'), 0, stdout)
      assert.equal(figure('left in outbox'), 0, stdout)
      assert.match(stdout, /^OK: /m)
    })
  }
})
