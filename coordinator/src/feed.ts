/**
 * The long polls waiting on the work feed, in memory. A waiting poll is one small object (its runner id, the
 * labels it reported, two closures) beside the request and socket Node keeps anyway; nothing is buffered for
 * it. A publish wakes only the polls whose runner the capsule targets (by id or by label); each woken poll
 * asks the store itself, so a wake-up that finds nothing (a label that changed) just keeps waiting.
 */
export interface Waiter {
  readonly runner: string;
  readonly labels: readonly string[];
  /** Look for work now (a publish may have targeted this runner). */
  wake(): void;
  /** Answer 204 now (shutdown). */
  end(): void;
}

export interface Target {
  runners: readonly string[];
  labels: readonly string[];
}

export class WaitingPolls {
  private readonly waiters = new Set<Waiter>();

  add(waiter: Waiter): void {
    this.waiters.add(waiter);
  }

  remove(waiter: Waiter): void {
    this.waiters.delete(waiter);
  }

  get size(): number {
    return this.waiters.size;
  }

  /** Wakes every poll of a runner this target addresses. */
  notify(target: Target): void {
    for (const waiter of [...this.waiters]) {
      if (target.runners.includes(waiter.runner) || waiter.labels.some((label) => target.labels.includes(label))) waiter.wake();
    }
  }

  /** Ends every waiting poll with 204 (the runner polls again, elsewhere or later). */
  endAll(): void {
    for (const waiter of [...this.waiters]) waiter.end();
  }
}
