// Free TCP ports on the loopback address.
import { createServer, type Server } from 'node:net'
import { brokerError, errorMessage, HOST } from './common.ts'

function listen(port: number): Promise<Server> {
  return new Promise((resolveListen, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen({ port, host: HOST, exclusive: true }, () => resolveListen(server))
  })
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolveClose) => server.close(() => resolveClose()))
}

/** Picks free ports, holding all of them open at once so the same port is never returned twice. */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: count }, () => listen(0)))
  const ports = servers.map((server) => {
    const address = server.address()
    if (address === null || typeof address === 'string') throw brokerError('listen(0) gave no TCP port')
    return address.port
  })
  await Promise.all(servers.map(closeServer))
  return ports
}

/**
 * Fails when a port is taken: otherwise the readiness probe could mistake someone else's broker
 * on that port for ours during the seconds before our JVM fails to bind.
 */
export async function assertPortFree(port: number, what: string): Promise<void> {
  try {
    await closeServer(await listen(port))
  } catch (error) {
    throw brokerError(
      `Cannot start Kafka: ${what} port ${HOST}:${port} is already in use (${errorMessage(error)})`,
    )
  }
}
