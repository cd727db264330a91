import type { IncomingMessage, ServerResponse } from 'node:http'
import type { OutboxAdmin, OutboxStatus } from '../admin/types.ts'
import { describe, invalidArgument } from '../core/errors.ts'
import { isAsset, loadAsset } from './assets.ts'
import { checkMutationRequest, HttpRefusal, readJsonBody, send, sendError, sendJson } from './http.ts'
import { deadLetterView, statusView } from './views.ts'

export interface DashboardOptions {
  /**
   * The path prefix the handler answers under when it sees whole URLs (plain `node:http`, or
   * Fastify's `request.raw`), like `'/outbox'`. Leave it unset under Express's `app.use(path, ...)`,
   * which strips the mount path itself.
   */
  basePath?: string
  /** How often the page reads `/api/status`, in ms (default 2000, from 500 to 60000). */
  refreshMs?: number
  /** How many minutes of history the charts keep (default 10, from 1 to 120). */
  historyMinutes?: number
  /** Hides Replay and Purge and refuses their requests with 403. */
  readOnly?: boolean
  /**
   * Messages published so far by the relays of this process (for example the sum of their
   * `delivered` events' `count`): with it the page charts sent and produced messages per second,
   * without it only the backlog's net change.
   */
  delivered?: () => number
}

/** A node:http request listener; Express and Connect also pass `next`, called for paths not ours. */
export type DashboardHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  next?: (error?: unknown) => void,
) => void

/** The header every POST must carry: see `checkMutationRequest`. */
export const DASHBOARD_HEADER = 'x-k-entity-dashboard'

const MAX_IDS = 1000

function checkOptions(
  admin: unknown,
  options: unknown,
): Required<Omit<DashboardOptions, 'delivered'>> & DashboardOptions {
  const candidate = admin as Partial<OutboxAdmin> | null
  if (
    typeof candidate !== 'object' ||
    candidate === null ||
    typeof candidate.status !== 'function' ||
    typeof candidate.deadLetters?.list !== 'function'
  ) {
    throw invalidArgument(
      `dashboardHandler(admin) needs an OutboxAdmin (with status() and deadLetters), got ${describe(admin)}`,
    )
  }
  if (options !== undefined && (typeof options !== 'object' || options === null)) {
    throw invalidArgument(
      `dashboardHandler(admin, options) takes an options object, got ${describe(options)}`,
    )
  }
  const {
    basePath = '',
    refreshMs = 2000,
    historyMinutes = 10,
    readOnly = false,
    delivered,
  } = (options ?? {}) as DashboardOptions
  if (typeof basePath !== 'string' || (basePath !== '' && !/^\/[^?#\s]*[^/?#\s]$/.test(basePath))) {
    throw invalidArgument(
      `dashboard option 'basePath' must be a path like '/outbox' (leading slash, no trailing slash; leave it unset to serve at the root), got ${describe(basePath)}`,
    )
  }
  if (!Number.isInteger(refreshMs) || refreshMs < 500 || refreshMs > 60_000) {
    throw invalidArgument(
      `dashboard option 'refreshMs' must be an integer from 500 to 60000, got ${describe(refreshMs)}`,
    )
  }
  if (!Number.isInteger(historyMinutes) || historyMinutes < 1 || historyMinutes > 120) {
    throw invalidArgument(
      `dashboard option 'historyMinutes' must be an integer from 1 to 120, got ${describe(historyMinutes)}`,
    )
  }
  if (typeof readOnly !== 'boolean') {
    throw invalidArgument(`dashboard option 'readOnly' must be a boolean, got ${describe(readOnly)}`)
  }
  if (delivered !== undefined && typeof delivered !== 'function') {
    throw invalidArgument(
      `dashboard option 'delivered' must be a function returning the count of published messages, got ${describe(delivered)}`,
    )
  }
  return { basePath, refreshMs, historyMinutes, readOnly, delivered }
}

/**
 * One status read shared by every open page: concurrent polls wait for the read in flight, and a
 * result younger than `fresh` ms is reused, so ten open tabs cost what one does.
 */
function sharedStatus(admin: OutboxAdmin, fresh: number): () => Promise<OutboxStatus> {
  let last: { at: number; value: Promise<OutboxStatus> } | undefined
  return () => {
    const now = Date.now()
    if (last !== undefined && now - last.at < fresh) return last.value
    const value = admin.status()
    const entry = { at: now, value }
    last = entry
    value.catch(() => {
      // A failure is not reused: the next poll tries the database again.
      if (last === entry) last = undefined
    })
    return value
  }
}

function checkIds(body: unknown): string[] {
  const ids = (body as { ids?: unknown } | null)?.ids
  if (
    !Array.isArray(ids) ||
    ids.length === 0 ||
    ids.length > MAX_IDS ||
    ids.some((id) => typeof id !== 'string' || !/^\d{1,19}$/.test(id))
  ) {
    throw invalidArgument(
      `the body must be { "ids": [...] } with 1 to ${MAX_IDS} dead-letter ids as strings (the 'id' of /api/dead-letters rows)`,
    )
  }
  return ids
}

function listQuery(search: URLSearchParams): { topic?: string; limit: number } {
  const topic = search.get('topic') ?? ''
  const limitText = search.get('limit') ?? '100'
  const limit = Number(limitText)
  if (!/^\d+$/.test(limitText) || limit < 1 || limit > 1000) {
    throw invalidArgument(
      `query parameter 'limit' must be an integer from 1 to 1000, got ${JSON.stringify(limitText)}`,
    )
  }
  return topic === '' ? { limit } : { topic, limit }
}

/**
 * The dashboard as a request handler: the page, its scripts, and a JSON API over `admin`. It has
 * no authentication of its own: mount it behind the application's.
 */
export function dashboardHandler(admin: OutboxAdmin, options?: DashboardOptions): DashboardHandler {
  const settings = checkOptions(admin, options)
  const status = sharedStatus(admin, Math.min(1000, settings.refreshMs / 2))
  const config = {
    database: admin.database,
    refreshMs: settings.refreshMs,
    historyMinutes: settings.historyMinutes,
    readOnly: settings.readOnly,
    delivered: settings.delivered !== undefined,
  }

  async function route(req: IncomingMessage, res: ServerResponse, path: string, url: URL): Promise<void> {
    const method = req.method ?? 'GET'
    const isGet = method === 'GET' || method === 'HEAD'
    const onlyGet = () =>
      new HttpRefusal(405, 'METHOD_NOT_ALLOWED', `${path} answers GET only`, { allow: 'GET, HEAD' })
    if (isAsset(path)) {
      if (!isGet) throw onlyGet()
      const asset = await loadAsset(path)
      send(res, 200, asset.contentType, asset.body, { 'cache-control': 'no-cache' }, method === 'HEAD')
      return
    }
    switch (path) {
      case '/api/config':
        if (!isGet) throw onlyGet()
        sendJson(res, 200, config)
        return
      case '/api/status': {
        if (!isGet) throw onlyGet()
        sendJson(res, 200, statusView(await status(), settings.delivered?.()))
        return
      }
      case '/api/dead-letters': {
        if (!isGet) throw onlyGet()
        const { topic, limit } = listQuery(url.searchParams)
        const filter = topic === undefined ? {} : { topic }
        const [rows, total] = await Promise.all([
          admin.deadLetters.list({ ...filter, limit }),
          admin.deadLetters.count(filter),
        ])
        sendJson(res, 200, { total, deadLetters: rows.map(deadLetterView) })
        return
      }
      case '/api/dead-letters/replay':
      case '/api/dead-letters/purge': {
        if (method !== 'POST') {
          throw new HttpRefusal(405, 'METHOD_NOT_ALLOWED', `${path} answers POST only`, { allow: 'POST' })
        }
        if (settings.readOnly) throw new HttpRefusal(403, 'FORBIDDEN', 'this dashboard is read-only')
        checkMutationRequest(req, DASHBOARD_HEADER)
        const ids = checkIds(await readJsonBody(req))
        if (path.endsWith('/replay'))
          sendJson(res, 200, { replayed: await admin.deadLetters.replay({ ids }) })
        else sendJson(res, 200, { purged: await admin.deadLetters.purge({ ids }) })
        return
      }
      default:
        throw new HttpRefusal(404, 'NOT_FOUND', `no dashboard page or API at ${path}`)
    }
  }

  return (req, res, next) => {
    const url = new URL(req.url ?? '/', 'http://dashboard.invalid')
    const base = settings.basePath
    if (base !== '' && url.pathname !== base && !url.pathname.startsWith(`${base}/`)) {
      if (next !== undefined) next()
      else sendError(res, new HttpRefusal(404, 'NOT_FOUND', `the dashboard is under ${base}/`))
      return
    }
    const path = url.pathname.slice(base.length) || '/'
    // The page uses relative URLs, so it must be loaded from a path ending in '/': under Express
    // `req.url` is '/' for both '/ops' and '/ops/', and only `originalUrl` tells them apart.
    const seen = new URL(
      (req as { originalUrl?: string }).originalUrl ?? req.url ?? '/',
      'http://dashboard.invalid',
    )
    if (path === '/' && !seen.pathname.endsWith('/')) {
      // One leading slash only: '//host' would be a redirect to another site.
      res.writeHead(302, { location: `${seen.pathname.replace(/^\/+/, '/')}/${seen.search}` })
      res.end()
      return
    }
    route(req, res, path, url).catch((error: unknown) => {
      if (res.headersSent) res.destroy()
      else sendError(res, error)
    })
  }
}
