/** What a limiter reports once a window in which lines were dropped has ended. */
export type SuppressedReport<K> = (key: K, suppressed: number, windowMs: number) => void;

interface KeyWindow {
  start: number;
  lines: number;
  suppressed: number;
  timer: NodeJS.Timeout | undefined;
}

/**
 * At most `linesPerWindow` log lines per key (a reason code) per window; the lines beyond are counted, and one
 * summary per key and window reports how many were dropped, as soon as that window ends. Only the log is limited:
 * metrics count every decision whatever this says. Keys must come from a closed set (one state each, kept for good).
 */
export class LogRateLimiter<K> {
  private readonly windows = new Map<K, KeyWindow>();
  private readonly windowMs: number;
  private readonly now: () => number;

  /**
   * @param linesPerWindow lines written per key and window, at least 1.
   * @param report called once per key and window that dropped lines, at the window's end (or by `flush`).
   * @param options `windowMs` (default 1000); `now` is a monotonic clock in milliseconds (default performance.now).
   */
  constructor(
    private readonly linesPerWindow: number,
    private readonly report: SuppressedReport<K>,
    options: { windowMs?: number; now?: () => number } = {},
  ) {
    if (!Number.isInteger(linesPerWindow) || linesPerWindow < 1) {
      throw new RangeError(`LogRateLimiter: expected linesPerWindow >= 1, got ${linesPerWindow}`);
    }
    const windowMs = options.windowMs ?? 1000;
    if (!Number.isFinite(windowMs) || windowMs <= 0) throw new RangeError(`LogRateLimiter: expected windowMs > 0, got ${windowMs}`);
    this.windowMs = windowMs;
    this.now = options.now ?? (() => performance.now());
  }

  /** Whether a line for `key` may be written now; false counts it as suppressed. */
  allow(key: K): boolean {
    const now = this.now();
    const windowMs = this.windowMs;
    let w = this.windows.get(key);
    if (w === undefined) {
      w = { start: now, lines: 0, suppressed: 0, timer: undefined };
      this.windows.set(key, w);
    } else if (now - w.start >= windowMs) {
      this.end(key, w);
      w.start = now;
      w.lines = 0;
    }
    if (w.lines < this.linesPerWindow) {
      w.lines++;
      return true;
    }
    if (w.suppressed++ === 0) {
      // The summary must not wait for the next line of this key: a flood that stops would never be reported.
      w.timer = setTimeout(() => this.end(key, w), Math.max(0, w.start + windowMs - now));
      w.timer.unref();
    }
    return false;
  }

  /** Reports every pending count now (shutdown, tests). */
  flush(): void {
    for (const [key, w] of this.windows) this.end(key, w);
  }

  private end(key: K, w: KeyWindow): void {
    if (w.timer !== undefined) clearTimeout(w.timer);
    w.timer = undefined;
    if (w.suppressed === 0) return;
    const suppressed = w.suppressed;
    w.suppressed = 0;
    this.report(key, suppressed, this.windowMs);
  }
}
