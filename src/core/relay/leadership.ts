import type { NodeMode } from '../relay.ts'
import type { RelayLog } from '../relay-log.ts'
import type { RelayStore } from '../seams.ts'
import type { Emit } from './events.ts'

/** Whether this relay may claim (leader lock or concurrent share), and saying so when it changes. */
export class Leadership {
  readonly #store: RelayStore
  readonly #mode: NodeMode
  readonly #log: RelayLog
  readonly #emit: Emit
  #leader = false
  /** The relay stands by because another relay holds the outbox, and has said so once. */
  #standbyReported = false

  constructor(store: RelayStore, mode: NodeMode, log: RelayLog, emit: Emit) {
    this.#store = store
    this.#mode = mode
    this.#log = log
    this.#emit = emit
  }

  get leader(): boolean {
    return this.#leader
  }

  /** The session is being replaced: whatever it held is gone, with nothing to report yet. */
  forget(): void {
    this.#leader = false
  }

  /**
   * Every mode asks the store, which answers from memory while this relay already holds the
   * outbox (no round trip per claim): single and exclusive relays hold the leader lock, and
   * concurrent ones a share of the outbox that excludes a leader (see `RelayStore`).
   */
  async ensure(): Promise<boolean> {
    const leader = await this.#store.tryAcquireLeadership()
    const mode = this.#mode
    // A single relay is meant to lead: only standing by, and taking over afterwards, are news.
    if (mode === 'exclusive' || (mode === 'single' && (!leader || this.#standbyReported)))
      this.#log.leadership(leader)
    this.set(leader)
    if (leader) this.#standbyReported = false
    else if (!this.#standbyReported && this.#store.heldBy !== undefined) {
      this.#standbyReported = true
      this.#reportStandby(this.#store.heldBy)
    }
    return leader
  }

  set(leader: boolean): void {
    // A relay that never led is not a standby yet when it (re)connects: only the leader lock's
    // answer says so (`ensure` logs it).
    if (this.#mode !== 'concurrent' && this.#leader && !leader) this.#log.leadership(false)
    if (leader === this.#leader) return
    this.#leader = leader
    // A concurrent relay has no leadership to report; being kept waiting is reported once.
    if (this.#mode !== 'concurrent') this.#emit({ type: 'leadership', leader })
  }

  /**
   * Once per wait: another relay holds the outbox. Quiet (the event only) for an exclusive
   * standby, which is how that mode is meant to run; loud for the other modes, where it means
   * two relays were configured in ways that cannot share one outbox.
   */
  #reportStandby(heldBy: 'leader' | 'concurrent' | 'claim-locks'): void {
    const mode = this.#mode
    const reason =
      heldBy === 'claim-locks'
        ? `concurrent relays whose claims lock other locks run on this outbox (per key, or claimSlots of another count), so this relay waits and claims nothing: their locks would not keep a key's messages on one relay. Give every concurrent relay of this outbox the same claimSlots (or none)`
        : heldBy === 'leader'
          ? mode === 'concurrent'
            ? `another relay leads this outbox (mode 'single' or 'exclusive'), so this concurrent relay waits and claims nothing: relays of one outbox cannot mix modes. Run every relay with mode: 'concurrent' to share the work, or stop the leader`
            : mode === 'single'
              ? `another relay already holds this outbox, so this 'single' relay stands by and claims nothing until it goes. To run a standby on purpose use mode: 'exclusive' on every relay; to share the work use mode: 'concurrent' on every relay (PostgreSQL and MySQL/MariaDB; SQLite has one relay per outbox)`
              : `another relay leads this outbox; this exclusive relay stands by`
          : mode === 'concurrent'
            ? 'as many concurrent relays as this database can admit already run on this outbox; this one waits for one of them to stop'
            : `concurrent relays are running on this outbox, so this '${mode}' relay waits and claims nothing: relays of one outbox cannot mix modes. Use mode: 'concurrent' on every relay to share the work, or stop the concurrent relays`
    this.#emit({ type: 'leadership', leader: false, reason })
    this.#log.standby(reason, mode !== 'exclusive' || heldBy === 'concurrent')
  }
}
