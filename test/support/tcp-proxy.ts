import net from 'node:net'

/**
 * A TCP proxy for fault tests, between a client and a server on this machine.
 * - `forward`: bytes pass both ways.
 * - `blackhole`: a network partition as the two ends see it: every connection open at that
 *   moment, and every new one, accepts bytes and forwards none, and is never closed (not even
 *   when the other side closes: that close is lost too). Such a connection stays dead after
 *   `forward()`; only connections opened afterwards pass bytes again.
 * - `drop`: every connection is destroyed, and new ones as soon as they arrive.
 * - `delay(ms)`: bytes pass both ways, each chunk `ms` late (a slow or distant link); chunks keep
 *   their order, also when the delay changes while they are on their way.
 */
export class TcpProxy {
  readonly #server: net.Server
  readonly #target: { host: string; port: number }
  readonly #connections = new Set<{ client: net.Socket; upstream: net.Socket | undefined; dead: boolean }>()
  #mode: 'forward' | 'blackhole' | 'drop' = 'forward'
  #delayMs = 0
  #resets = 0
  #accepted = 0

  private constructor(target: { host: string; port: number }) {
    this.#target = target
    this.#server = net.createServer((client) => this.#accept(client))
  }

  /** `port`: where to listen (default a free one), e.g. the port a Kafka broker advertises. */
  static async start(target: { host: string; port: number }, { port = 0 } = {}): Promise<TcpProxy> {
    const proxy = new TcpProxy(target)
    await new Promise<void>((resolve, reject) => {
      proxy.#server.once('error', reject)
      proxy.#server.listen(port, '127.0.0.1', resolve)
    })
    return proxy
  }

  get port(): number {
    return (this.#server.address() as net.AddressInfo).port
  }

  get mode(): 'forward' | 'blackhole' | 'drop' {
    return this.#mode
  }

  /** Connections clients opened to the proxy, whatever became of them: proof the path passes it. */
  get accepted(): number {
    return this.#accepted
  }

  /** Connections drop() destroyed and connections refused while dropping: proof a fault hit something. */
  get resets(): number {
    return this.#resets
  }

  /** The latency added to every chunk in `forward` mode (0 unless set by delay()). */
  get delayMs(): number {
    return this.#delayMs
  }

  forward(): void {
    this.#mode = 'forward'
    this.#delayMs = 0
  }

  delay(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new Error(`TcpProxy.delay: ms must be >= 0, got ${ms}`)
    this.#mode = 'forward'
    this.#delayMs = ms
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
      this.#resets++
    }
    this.#connections.clear()
  }

  async close(): Promise<void> {
    this.drop()
    for (const connection of this.#connections) connection.client.destroy()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }

  #accept(client: net.Socket): void {
    this.#accepted++
    client.on('error', () => {})
    if (this.#mode === 'drop') {
      client.destroy()
      this.#resets++
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
    const toClient = this.#delayed(client, connection)
    const toUpstream = this.#delayed(upstream, connection)
    upstream.on('data', toClient)
    client.on('data', toUpstream)
    upstream.on('close', () => {
      // The server's goodbye is lost in a partition: the client keeps waiting.
      if (!connection.dead) {
        // Behind the chunks still on their way, as the close would travel on a slow link.
        if (this.#delayMs > 0) setTimeout(() => client.destroy(), this.#delayMs)
        else client.destroy()
        this.#connections.delete(connection)
      }
    })
  }

  /**
   * A writer to `socket` that holds each chunk for the current delay. One queue per direction,
   * drained in order by one timer: a chunk never overtakes an earlier one when the delay shrinks.
   */
  #delayed(socket: net.Socket, connection: { dead: boolean }): (chunk: Buffer) => void {
    const queue: { due: number; chunk: Buffer }[] = []
    let armed = false
    const arm = () => {
      armed = true
      setTimeout(drain, Math.max(0, (queue[0] as { due: number }).due - Date.now()))
    }
    const drain = () => {
      armed = false
      const now = Date.now()
      while (queue.length > 0 && (queue[0] as { due: number }).due <= now) {
        const { chunk } = queue.shift() as { chunk: Buffer }
        if (!connection.dead) socket.write(chunk)
      }
      if (queue.length > 0) arm()
    }
    return (chunk) => {
      if (connection.dead) return
      if (this.#delayMs === 0 && queue.length === 0) {
        socket.write(chunk)
        return
      }
      const last = queue.at(-1)?.due ?? 0
      queue.push({ due: Math.max(Date.now() + this.#delayMs, last), chunk })
      if (!armed) arm()
    }
  }
}
