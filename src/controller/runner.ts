/**
 * A bounded-frequency runner, as kube-proxy's: a requested run happens as soon as allowed but never
 * more often than once per `minInterval`; runs happen at least every `maxInterval`; a failed run is
 * retried with exponential backoff (from `minInterval` up to `maxInterval`). Runs never overlap.
 */

export interface RunnerOptions {
  readonly minIntervalMs: number;
  readonly maxIntervalMs: number;
  /** First retry delay after a failure; doubles per consecutive failure up to maxIntervalMs. */
  readonly retryBaseMs?: number;
  /** Injected for tests. */
  readonly now?: () => number;
}

export type RunFn = () => Promise<void>;

export class BoundedFrequencyRunner {
  /** The scheduled run: a timer, or an immediate when no wait is due. */
  private timer: { cancel(): void } | undefined;
  private periodic: NodeJS.Timeout | undefined;
  private running = false;
  private pending = false;
  private lastRun = Number.NEGATIVE_INFINITY;
  private failures = 0;
  private stopped = true;
  private idleWaiters: (() => void)[] = [];
  private readonly now: () => number;

  constructor(
    private readonly fn: RunFn,
    private readonly opts: RunnerOptions,
    private readonly onError: (err: unknown, retryInMs: number) => void = () => undefined,
  ) {
    this.now = opts.now ?? (() => performance.now());
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.armPeriodic();
    this.request();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    clearTimeout(this.periodic);
    this.timer = undefined;
    this.periodic = undefined;
  }

  /** Asks for a run as soon as the minimum interval allows. */
  request(): void {
    if (this.stopped) return;
    if (this.running) {
      this.pending = true;
      return;
    }
    const wait = Math.max(0, this.lastRun + this.opts.minIntervalMs - this.now());
    this.schedule(wait);
  }

  /** Resolves when no run is in progress or scheduled to start immediately. */
  async idle(): Promise<void> {
    if (!this.running && !this.pending && this.timer === undefined) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(delayMs: number): void {
    if (this.timer !== undefined) {
      // Keep the earlier of the two deadlines.
      return;
    }
    const fire = (): void => {
      this.timer = undefined;
      void this.execute();
    };
    // No wait due (--iptables-min-sync-period=0s, or its time passed): at the end of this turn of the
    // event loop, not on a timer's minimum of 1 ms plus the loop's wake-up (issue 14, event-to-rules);
    // changes published in the same turn still make one run.
    if (delayMs <= 0) {
      const immediate = setImmediate(fire);
      this.timer = { cancel: () => clearImmediate(immediate) };
    } else {
      const timeout = setTimeout(fire, delayMs);
      this.timer = { cancel: () => clearTimeout(timeout) };
    }
  }

  private armPeriodic(): void {
    clearTimeout(this.periodic);
    if (this.stopped) return;
    this.periodic = setTimeout(() => {
      this.periodic = undefined;
      this.request();
      this.armPeriodic();
    }, this.opts.maxIntervalMs);
    this.periodic.unref?.();
  }

  private async execute(): Promise<void> {
    if (this.stopped || this.running) return;
    this.running = true;
    this.pending = false;
    this.lastRun = this.now();
    let retryIn: number | undefined;
    try {
      await this.fn();
      this.failures = 0;
    } catch (err) {
      this.failures++;
      const base = this.opts.retryBaseMs ?? Math.max(this.opts.minIntervalMs, 100);
      retryIn = Math.min(this.opts.maxIntervalMs, base * 2 ** (this.failures - 1));
      this.onError(err, retryIn);
    } finally {
      this.running = false;
    }
    if (this.stopped) return this.wakeIdle();
    if (retryIn !== undefined) {
      this.pending = false;
      this.schedule(Math.max(retryIn, this.opts.minIntervalMs));
    } else if (this.pending) {
      this.request();
    }
    this.armPeriodic();
    if (this.timer === undefined && !this.pending) this.wakeIdle();
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
