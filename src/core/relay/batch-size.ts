import type { StoredMessage } from '../record.ts'

/** What a batch may hold: the relay's `maxMessagesPerPoll` and `maxBytesPerPoll`. */
export interface BatchLimits {
  messages: number
  bytes: number
}

/** A batch's messages dealt with, and whether its claim was cut by a limit (see `isFullBatch`). */
export interface BatchResult {
  count: number
  full: boolean
}

/**
 * A message's bytes as the stores count them against `maxBytesPerPoll`: key, value and headers.
 * Header names and values are counted raw here; stores count the stored JSON (base64 values), a
 * little more, so this never overstates what a claim counted.
 */
export function messageBytes(message: StoredMessage): number {
  let bytes = (message.key?.length ?? 0) + (message.value?.length ?? 0)
  for (const [name, value] of message.headers) bytes += Buffer.byteLength(name) + (value?.length ?? 0)
  return bytes
}

/**
 * Whether a claim stopped at a limit rather than at the end of what was due: then more is likely
 * waiting, and the relay claims again at once (and the pipeline claims ahead). The row limit is
 * exact; the byte budget is known to be reached only by the next row, which the claim does not
 * return, so half the budget counts as full. That is exact when messages are of one size: a
 * claim cut by the budget then holds more than the budget less one message, and one message
 * above half the budget is a batch of its own. A wrong "full" costs one claim that finds little.
 */
export function isFullBatch(messages: readonly StoredMessage[], limits: BatchLimits): boolean {
  if (messages.length >= limits.messages) return true
  let bytes = 0
  for (const message of messages) bytes += messageBytes(message)
  return bytes * 2 >= limits.bytes
}
