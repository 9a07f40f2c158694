/**
 * The one drain rule of every listener: ask it to close gracefully, and force it closed once `graceMs` has passed.
 * Resolves when either has happened; the timer never keeps the process alive.
 */
export function closeWithin(graceMs: number, graceful: (done: () => void) => void, force: () => void): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      force();
      resolve();
    }, graceMs);
    timer.unref();
    graceful(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
