import type { StoredMessage } from '../record.ts'

/** What a batch may hold: the relay's `maxMessagesPerPoll` and `maxBytesPerPoll`. */
export interface BatchLimits {
  messages: number
  bytes: number
}

/** A batch's messages dealt with, and whether its claim was cut by a limit (see `FullBatch`). */
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

/** Kafka's default largest message (1 MiB): what the next message is assumed to be at most. */
const USUAL_LARGEST_MESSAGE = 1024 * 1024

/**
 * Whether a claim stopped at a limit rather than at the end of what was due: then more is likely
 * waiting, and the relay claims again at once (and the pipeline claims ahead) instead of pausing
 * for the polling interval. The row limit is exact. The byte budget stops a claim before a row
 * the claim does not return, so its size is unknown: a batch counts as full when that row could
 * have been too large for what is left of the budget, taking it as large as the largest message
 * seen so far, and at least 1 MiB (Kafka's default largest message). So batches of messages of
 * one size, and batches before any message up to 1 MiB, are always seen as full; only a message
 * larger than both, after a short batch, waits for the next poll. A wrong "full" costs one claim
 * that finds little.
 */
export class FullBatch {
  readonly #limits: BatchLimits
  #largest = USUAL_LARGEST_MESSAGE

  constructor(limits: BatchLimits) {
    this.#limits = limits
  }

  test(messages: readonly StoredMessage[]): boolean {
    let bytes = 0
    for (const message of messages) {
      const size = messageBytes(message)
      if (size > this.#largest) this.#largest = size
      bytes += size
    }
    return messages.length >= this.#limits.messages || bytes + this.#largest > this.#limits.bytes
  }
}
