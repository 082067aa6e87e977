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

/**
 * Waiting polls per runner: an agent has one at a time, and a second while a dropped connection is not yet
 * noticed. More are ended oldest first (204, which the runner answers by polling again), so one runner (or a
 * hostile one with its key) cannot hold sockets and memory with thousands of waiting polls.
 */
export const MAX_POLLS_PER_RUNNER = 4;

export class WaitingPolls {
  private readonly waiters = new Set<Waiter>();
  private readonly byRunner = new Map<string, Set<Waiter>>();

  constructor(private readonly maxPerRunner = MAX_POLLS_PER_RUNNER) {}

  add(waiter: Waiter): void {
    let mine = this.byRunner.get(waiter.runner);
    if (mine === undefined) {
      mine = new Set();
      this.byRunner.set(waiter.runner, mine);
    }
    // Sets iterate in insertion order: the first is the oldest. end() removes it (through the poll's finish).
    while (mine.size >= this.maxPerRunner) {
      const oldest = mine.values().next().value!;
      mine.delete(oldest);
      this.waiters.delete(oldest);
      oldest.end();
    }
    mine.add(waiter);
    this.waiters.add(waiter);
  }

  remove(waiter: Waiter): void {
    this.waiters.delete(waiter);
    const mine = this.byRunner.get(waiter.runner);
    mine?.delete(waiter);
    if (mine?.size === 0) this.byRunner.delete(waiter.runner);
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
