import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { OutboxAdmin } from '../admin/types.ts'
import { describe, invalidArgument } from '../core/errors.ts'
import { type DashboardOptions, dashboardHandler } from './handler.ts'

export interface StartDashboardOptions extends DashboardOptions {
  admin: OutboxAdmin
  /** Default 0: any free port (read it from the result's `url`). */
  port?: number
  /**
   * Default '127.0.0.1': the dashboard has no authentication, so it is reachable from this
   * machine only unless told otherwise.
   */
  host?: string
}

export interface DashboardServer {
  /** Where the page is, like `http://127.0.0.1:4000/`. */
  readonly url: string
  readonly port: number
  readonly server: Server
  /** Stops the server and drops open connections; the admin stays open (its owner closes it). */
  close(): Promise<void>
}

/** The dashboard on its own `node:http` server (what `k-entity dashboard` runs). */
export async function startDashboard(options: StartDashboardOptions): Promise<DashboardServer> {
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument(`startDashboard() needs { admin, port?, host? }, got ${describe(options)}`)
  }
  const { admin, port = 0, host = '127.0.0.1', ...handlerOptions } = options
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw invalidArgument(
      `startDashboard option 'port' must be an integer from 0 to 65535, got ${describe(port)}`,
    )
  }
  if (typeof host !== 'string' || host.length === 0) {
    throw invalidArgument(
      `startDashboard option 'host' must be a host name or address, got ${describe(host)}`,
    )
  }
  const server = createServer(dashboardHandler(admin, handlerOptions))
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        error.code === 'EADDRINUSE'
          ? invalidArgument(
              `port ${port} on ${host} is already in use: choose another port (or 0 for any free one)`,
            )
          : error.code === 'EADDRNOTAVAIL' || error.code === 'ENOTFOUND'
            ? invalidArgument(
                `cannot listen on host ${host} (${error.code}): use an address of this machine, like 127.0.0.1`,
              )
            : error,
      )
    })
    server.listen(port, host, () => resolve())
  })
  const address = server.address() as AddressInfo
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address
  return {
    url: `http://${shownHost}:${address.port}${handlerOptions.basePath ?? ''}/`,
    port: address.port,
    server,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()))
        // The page polls over keep-alive connections, which would hold close() open.
        server.closeAllConnections()
      }),
  }
}
