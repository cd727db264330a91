/**
 * What every k-entity node-postgres "submittable" shares: the client hands it each message of
 * the answer to what `submit()` wrote, and `done` settles at ReadyForQuery or at an error. A
 * server error is followed by a ReadyForQuery that the client no longer routes here, a broken
 * connection by nothing, so an error settles at once.
 */
export abstract class Submittable {
  readonly done: Promise<void>
  /**
   * An error raised while reading the answer, reported at ReadyForQuery: until then the session
   * is still in the middle of the answer.
   */
  protected pending: unknown
  #resolve!: () => void
  #reject!: (error: unknown) => void
  #settled = false

  constructor() {
    this.done = new Promise<void>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
  }

  handleError(error: unknown): void {
    this.#settle(error)
  }

  handleReadyForQuery(): void {
    this.#settle(this.pending)
  }

  handleCommandComplete(): void {}
  handleRowDescription(): void {}
  handleDataRow(): void {}
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
  handleCopyData(_message: { chunk: Buffer }): void {}

  handleCopyInResponse(connection: { sendCopyFail(message: string): void }): void {
    connection.sendCopyFail('k-entity sends no COPY data')
  }

  #settle(error: unknown): void {
    if (this.#settled) return
    this.#settled = true
    if (error === undefined) this.#resolve()
    else this.#reject(error)
  }
}
