import type { OutboxStatus } from '../admin/types.ts'
import type { DeadLetter } from '../core/dead-letters.ts'

/** At most this much of a key, value or header is shown: the table is for recognising a message. */
const PREVIEW_BYTES = 160

export interface BytesView {
  bytes: number
  /** UTF-8 text when the bytes are printable text, otherwise base64; cut at `PREVIEW_BYTES`. */
  preview: string
  encoding: 'utf8' | 'base64'
  truncated: boolean
}

/** No control characters other than tab and line breaks, and no invalid UTF-8 (U+FFFD). */
function isPrintable(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    if (
      (code < 0x20 && code !== 0x09 && code !== 0x0a && code !== 0x0d) ||
      code === 0x7f ||
      code === 0xfffd
    ) {
      return false
    }
  }
  return true
}

function bytesView(value: Buffer | null): BytesView | null {
  if (value === null) return null
  const head = value.subarray(0, PREVIEW_BYTES)
  const text = head.toString('utf8')
  // A cut multi-byte character at the end is not a sign of binary data.
  const printable = isPrintable(text.replace(/\ufffd{1,3}$/, ''))
  return {
    bytes: value.length,
    preview: printable ? text : head.toString('base64'),
    encoding: printable ? 'utf8' : 'base64',
    truncated: value.length > PREVIEW_BYTES,
  }
}

export function deadLetterView(letter: DeadLetter) {
  return {
    id: letter.id,
    messageId: letter.messageId,
    topic: letter.topic,
    key: bytesView(letter.key),
    value: bytesView(letter.value),
    headers: letter.headers.map(([name, value]) => ({ name, value: bytesView(value) })),
    attempts: letter.attempts,
    // The last few are enough to see why; the full history stays available through the API of the outbox.
    errors: letter.errors.slice(-5),
    createdAt: letter.createdAt.toISOString(),
    deadAt: letter.deadAt.toISOString(),
  }
}

export function statusView(status: OutboxStatus, delivered: number | undefined) {
  return {
    ...status,
    at: status.at.toISOString(),
    relays: status.relays.map((relay) => ({ ...relay, since: relay.since?.toISOString() })),
    ...(delivered === undefined ? {} : { delivered }),
  }
}
