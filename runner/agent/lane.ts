/**
 * One run at a time across the agent: the work feed's capsules, the scheduler's firings and the spool's
 * files all go through one RunLane, so two runs never share the host (nor the store's run bookkeeping) and a
 * slot that comes while another run holds the lane waits for it (and, if it then comes too late, is
 * recorded as missed by the scheduler).
 */
export class RunLane {
  private tail: Promise<void> = Promise.resolve();
  private held = 0;

  /** Runs `fn` once every earlier holder is done; its result or error is the caller's. */
  exclusive<T>(fn: () => Promise<T> | T): Promise<T> {
    const turn = this.tail.then(async () => {
      this.held += 1;
      try {
        return await fn();
      } finally {
        this.held -= 1;
      }
    });
    // The next holder waits for this one whatever it ends with.
    this.tail = turn.then(
      () => undefined,
      () => undefined,
    );
    return turn;
  }

  /** Resolves once every holder so far is done. */
  idle(): Promise<void> {
    return this.tail;
  }

  /** Whether a holder is running now. */
  get busy(): boolean {
    return this.held > 0;
  }
}
