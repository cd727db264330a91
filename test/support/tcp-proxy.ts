import net from 'node:net'

/**
 * A TCP proxy for fault tests, between a client and a server on this machine.
 * - `forward`: bytes pass both ways.
 * - `blackhole`: a network partition as the two ends see it: every connection open at that
 *   moment, and every new one, accepts bytes and forwards none, and is never closed (not even
 *   when the other side closes: that close is lost too). Such a connection stays dead after
 *   `forward()`; only connections opened afterwards pass bytes again.
 * - `drop`: every connection is destroyed, and new ones as soon as they arrive.
 */
export class TcpProxy {
  readonly #server: net.Server
  readonly #target: { host: string; port: number }
  readonly #connections = new Set<{ client: net.Socket; upstream: net.Socket | undefined; dead: boolean }>()
  #mode: 'forward' | 'blackhole' | 'drop' = 'forward'

  private constructor(target: { host: string; port: number }) {
    this.#target = target
    this.#server = net.createServer((client) => this.#accept(client))
  }

  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const proxy = new TcpProxy(target)
    await new Promise<void>((resolve) => proxy.#server.listen(0, '127.0.0.1', resolve))
    return proxy
  }

  get port(): number {
    return (this.#server.address() as net.AddressInfo).port
  }

  get mode(): 'forward' | 'blackhole' | 'drop' {
    return this.#mode
  }

  forward(): void {
    this.#mode = 'forward'
  }

  blackhole(): void {
    this.#mode = 'blackhole'
    for (const connection of this.#connections) connection.dead = true
  }

  drop(): void {
    this.#mode = 'drop'
    for (const connection of this.#connections) {
      connection.client.destroy()
      connection.upstream?.destroy()
    }
    this.#connections.clear()
  }

  async close(): Promise<void> {
    this.drop()
    for (const connection of this.#connections) connection.client.destroy()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }

  #accept(client: net.Socket): void {
    client.on('error', () => {})
    if (this.#mode === 'drop') {
      client.destroy()
      return
    }
    const connection = {
      client,
      upstream: undefined as net.Socket | undefined,
      dead: this.#mode === 'blackhole',
    }
    this.#connections.add(connection)
    client.on('close', () => {
      if (!connection.dead) {
        connection.upstream?.destroy()
        this.#connections.delete(connection)
      }
    })
    // A partitioned client's bytes are read and dropped, so its sends never block.
    if (connection.dead) {
      client.on('data', () => {})
      return
    }
    const upstream = net.connect(this.#target)
    connection.upstream = upstream
    upstream.on('error', () => {})
    upstream.on('data', (chunk) => {
      if (!connection.dead) client.write(chunk)
    })
    client.on('data', (chunk) => {
      if (!connection.dead) upstream.write(chunk)
    })
    upstream.on('close', () => {
      // The server's goodbye is lost in a partition: the client keeps waiting.
      if (!connection.dead) {
        client.destroy()
        this.#connections.delete(connection)
      }
    })
  }
}
