import type { IncomingMessage, ServerResponse } from 'node:http'
import { isKEntityError, redactCredentials } from '../core/errors.ts'

/**
 * A refusal with its HTTP status, sent as `{ error: { code, message } }`. Refusals of the request
 * itself carry HTTP-level codes ('FORBIDDEN', 'NOT_FOUND', 'METHOD_NOT_ALLOWED'); bad arguments and
 * database failures carry k-entity's own codes (errors.ts).
 */
export class HttpRefusal {
  readonly status: number
  readonly code: string
  readonly message: string
  readonly headers: Record<string, string>
  constructor(status: number, code: string, message: string, headers: Record<string, string> = {}) {
    this.status = status
    this.code = code
    this.message = message
    this.headers = headers
  }
}

// The page loads only its own files, inline nothing, and cannot be framed (clickjacking on the
// replay and purge buttons).
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
}

export function send(
  res: ServerResponse,
  status: number,
  contentType: string,
  body: Buffer | string,
  extra: Record<string, string> = {},
  headOnly = false,
): void {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'content-type': contentType,
    'content-length': String(bytes.length),
    ...extra,
  })
  res.end(headOnly ? undefined : bytes)
}

export function sendJson(
  res: ServerResponse,
  status: number,
  value: unknown,
  extra: Record<string, string> = {},
) {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value), {
    'cache-control': 'no-store',
    ...extra,
  })
}

/** What the page is told about a failure: a refusal as is, our own errors by code, the rest as 500. */
export function sendError(res: ServerResponse, error: unknown): void {
  if (error instanceof HttpRefusal) {
    sendJson(res, error.status, { error: { code: error.code, message: error.message } }, error.headers)
    return
  }
  if (isKEntityError(error)) {
    // A database or broker that fails is a service problem (503); a bug of ours stays a 500.
    const status = error.code === 'KE_INVALID_ARGUMENT' ? 400 : error.code === 'KE_INTERNAL' ? 500 : 503
    sendJson(res, status, { error: { code: error.code, message: redactCredentials(error.message) } })
    return
  }
  const message = error instanceof Error ? error.message : String(error)
  sendJson(res, 500, { error: { code: 'KE_INTERNAL', message: redactCredentials(message) } })
}

const MAX_BODY = 64 * 1024

/**
 * The checks that make a state-changing request safe to accept without cookies or tokens of our
 * own: a JSON body and a custom header can only come from script on a page that CORS lets talk
 * to us, and we answer no preflight, so only our own page (same origin) can send them. A form on
 * another site cannot set either.
 */
export function checkMutationRequest(req: IncomingMessage, header: string): void {
  const contentType = String(req.headers['content-type'] ?? '')
    .split(';')[0]
    ?.trim()
    .toLowerCase()
  if (contentType !== 'application/json') {
    throw new HttpRefusal(
      415,
      'KE_INVALID_ARGUMENT',
      'send the body as JSON (content-type: application/json)',
    )
  }
  if (req.headers[header] !== '1') {
    throw new HttpRefusal(
      403,
      'FORBIDDEN',
      `requests that change data must carry the header '${header}: 1' (the dashboard page sends it; cross-site forms cannot)`,
    )
  }
  if (req.headers['sec-fetch-site'] === 'cross-site') {
    throw new HttpRefusal(403, 'FORBIDDEN', 'cross-site requests are refused')
  }
  const origin = req.headers.origin
  if (origin !== undefined && origin !== 'null') {
    let originHost: string
    try {
      originHost = new URL(origin).host
    } catch {
      throw new HttpRefusal(403, 'FORBIDDEN', 'the Origin header is not a URL')
    }
    // Behind a proxy that rewrites Host, the name the browser used is in X-Forwarded-Host.
    const forwarded = String(req.headers['x-forwarded-host'] ?? '')
      .split(',')[0]
      ?.trim()
    if (originHost !== req.headers.host && originHost !== forwarded) {
      throw new HttpRefusal(
        403,
        'FORBIDDEN',
        `requests from ${origin} are refused: not this dashboard's origin`,
      )
    }
  }
}

export async function readJsonBody(req: IncomingMessage): Promise<unknown> {
  // Express and Fastify body parsers may have read the stream already.
  const parsed = (req as IncomingMessage & { body?: unknown }).body
  if (parsed !== undefined && typeof parsed === 'object' && parsed !== null && !Buffer.isBuffer(parsed)) {
    return parsed
  }
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > MAX_BODY)
      throw new HttpRefusal(413, 'KE_INVALID_ARGUMENT', `the body is over ${MAX_BODY} bytes`)
    chunks.push(chunk as Buffer)
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    throw new HttpRefusal(400, 'KE_INVALID_ARGUMENT', 'the body is not valid JSON')
  }
}
