import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { clusterNodeProperties, layout, serverProperties } from '../../scripts/kafka/config.ts'

function properties(text: string): Map<string, string> {
  return new Map(
    text
      .trim()
      .split('\n')
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  )
}

describe('Kafka launcher config', () => {
  it('by default binds and advertises the client port itself, and no other client listener', () => {
    const p = properties(serverProperties(layout(19092, 19093, '/tmp/x')))
    assert.equal(p.get('listeners'), 'PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093')
    assert.equal(p.get('advertised.listeners'), 'PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093')
    assert.equal(p.get('listener.security.protocol.map'), 'CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT')
  })

  it('a proxied listener binds its own port and advertises the proxy port; PLAINTEXT still advertises itself', () => {
    const l = layout(19092, 19093, '/tmp/x', undefined, { port: 19094, advertisedPort: 19095 })
    const p = properties(serverProperties(l))
    assert.equal(
      p.get('listeners'),
      'PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093,PROXIED://127.0.0.1:19094',
    )
    assert.equal(
      p.get('advertised.listeners'),
      'PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093,PROXIED://127.0.0.1:19095',
    )
    assert.equal(
      p.get('listener.security.protocol.map'),
      'CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT',
    )
    assert.equal(p.get('inter.broker.listener.name'), 'PLAINTEXT')
  })
})

describe('Kafka launcher config, cluster', () => {
  const settings = { controllerPort: 19090, sessionTimeoutMs: undefined, replication: 3, minIsr: 2 }

  it('a broker node with a proxied listener binds it and advertises the proxy port; a plain one has no PROXIED listener', () => {
    const proxied = properties(
      clusterNodeProperties(
        2,
        layout(19092, 19090, '/tmp/x', undefined, { port: 19094, advertisedPort: 19095 }),
        settings,
      ),
    )
    assert.equal(proxied.get('listeners'), 'PLAINTEXT://127.0.0.1:19092,PROXIED://127.0.0.1:19094')
    assert.equal(proxied.get('advertised.listeners'), 'PLAINTEXT://127.0.0.1:19092,PROXIED://127.0.0.1:19095')
    assert.equal(
      proxied.get('listener.security.protocol.map'),
      'CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT',
    )
    const plain = properties(clusterNodeProperties(2, layout(19092, 19090, '/tmp/x'), settings))
    assert.equal(plain.get('advertised.listeners'), 'PLAINTEXT://127.0.0.1:19092')
    assert.equal(plain.get('listener.security.protocol.map'), 'CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT')
  })
})
