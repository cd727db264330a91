import { startDashboard } from '../../dashboard/server.ts'
import { adminFor, target } from '../database.ts'
import { note, print, printJson } from '../output.ts'
import { CONNECTION_HELP, CONNECTION_OPTIONS, parse, positiveInteger, UsageError } from '../usage.ts'

export const DASHBOARD_HELP = `Usage: k-entity dashboard [--port N] [--host H] [--read-only] [connection options]

Serves a live page of the outbox: backlog, throughput and lag charts, relay nodes, and the dead
letters with Replay and Purge buttons. It has no login of its own, so it listens on 127.0.0.1
unless --host says otherwise; to expose it, mount dashboardHandler() (k-entity/dashboard) behind
your app's authentication instead.
  --port N         port to listen on (default 4000; 0 picks a free one)
  --host H         address to listen on (default 127.0.0.1)
  --read-only      no Replay or Purge
  --refresh MS     how often the page reads the status (500 to 60000, default 2000)

${CONNECTION_HELP}`

export async function dashboard(args: string[]): Promise<number> {
  const { values } = parse('dashboard', args, {
    ...CONNECTION_OPTIONS,
    port: { type: 'string' },
    host: { type: 'string' },
    'read-only': { type: 'boolean' },
    refresh: { type: 'string' },
  })
  if (values.help) {
    print(DASHBOARD_HELP)
    return 0
  }
  const port = values.port === '0' ? 0 : (positiveInteger(values.port, 'port', 65_535) ?? 4000)
  const refreshMs = positiveInteger(values.refresh, 'refresh', 60_000)
  if (values.host !== undefined && values.host.length === 0) throw new UsageError('--host must not be empty')
  const admin = adminFor(target(values))
  // Fails here, not in the browser, when the database is unreachable or the outbox is missing.
  await admin.status({ countCap: 1 }).catch(async (error: unknown) => {
    await admin.close()
    throw error
  })
  const server = await startDashboard({
    admin,
    port,
    host: values.host ?? '127.0.0.1',
    readOnly: values['read-only'] === true,
    ...(refreshMs === undefined ? {} : { refreshMs }),
  }).catch(async (error: unknown) => {
    await admin.close()
    throw error
  })
  if (values.json) printJson({ url: server.url })
  else note(`k-entity dashboard: ${server.url} (Ctrl-C stops it)`)
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve)
    process.once('SIGTERM', resolve)
  })
  await server.close()
  await admin.close()
  return 0
}
