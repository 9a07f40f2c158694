import { statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';

/** Options of a FileWatcher; the defaults are what `serve` uses. */
export interface FileWatcherOptions {
  /** Called (debounced) when any watched file's fingerprint has changed since the last call. */
  onChange: () => void;
  /** Quiet time after an event before the fingerprints are compared. Default 250 ms. */
  debounceMs?: number;
  /** Interval of the stat fallback. Default 5000 ms. */
  pollMs?: number;
}

/**
 * Watches files the way a Kubernetes ConfigMap or Secret volume changes them: kubelet's AtomicWriter writes a new
 * `..<timestamp>` directory and renames a `..data_tmp` symlink over `..data`, so the file itself (a symlink into
 * `..data`) is never written. The parent directory is watched, not the file: an inotify watch on the file would stay
 * on the old inode. Every event, and a cheap periodic stat (fs.watch misses events on some volumes: NFS, overlay,
 * a directory created later), only schedules a comparison of fingerprints (device, inode, size, mtime, ctime of the
 * file after following symlinks), so unrelated events in the directory and a rename seen twice cost one stat each.
 */
export class FileWatcher {
  private readonly onChange: () => void;
  private readonly debounceMs: number;
  private readonly poll: NodeJS.Timeout;
  private last = new Map<string, string | undefined>();
  private watchers = new Map<string, FSWatcher>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(files: readonly string[], options: FileWatcherOptions) {
    const pollMs = options.pollMs ?? 5000;
    const debounceMs = options.debounceMs ?? 250;
    if (!Number.isInteger(pollMs) || pollMs < 10) throw new TypeError(`FileWatcher pollMs: expected an integer >= 10, got ${pollMs}`);
    if (!Number.isInteger(debounceMs) || debounceMs < 0) throw new TypeError(`FileWatcher debounceMs: expected an integer >= 0, got ${debounceMs}`);
    this.onChange = options.onChange;
    this.debounceMs = debounceMs;
    this.setFiles(files);
    this.poll = setInterval(() => {
      if (this.changed(false)) this.schedule();
    }, pollMs);
    this.poll.unref();
  }

  /**
   * Replaces the watched set (a reload may name other secret files). Files watched before keep their last
   * fingerprint, so a change made while the caller was reading them still fires; a new file is fingerprinted now.
   */
  setFiles(files: readonly string[]): void {
    if (this.closed) return;
    const next = new Map<string, string | undefined>();
    for (const file of files.map((f) => resolve(f))) next.set(file, this.last.get(file));
    this.last = next;
    const dirs = new Set([...next.keys()].map((f) => dirname(f)));
    for (const [dir, w] of this.watchers) {
      if (!dirs.has(dir)) {
        w.close();
        this.watchers.delete(dir);
      }
    }
    for (const dir of dirs) if (!this.watchers.has(dir)) this.watchDir(dir);
    for (const [file, v] of next) if (v === undefined) next.set(file, fingerprint(file));
  }

  close(): void {
    this.closed = true;
    clearInterval(this.poll);
    clearTimeout(this.timer);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }

  private watchDir(dir: string): void {
    const names = () => new Set([...this.last.keys()].filter((f) => dirname(f) === dir).map((f) => basename(f)));
    try {
      const w = watch(dir, { persistent: false }, (_event, name) => {
        // `..data` is the AtomicWriter swap; a missing name (some platforms) could be anything.
        if (name === null || name.startsWith('..') || names().has(name)) this.schedule();
      });
      w.on('error', () => {
        // The directory went away or the watch broke: the stat poll still sees changes.
        w.close();
        this.watchers.delete(dir);
      });
      this.watchers.set(dir, w);
    } catch {
      // No such directory yet, or no inotify watches left: the poll covers it.
    }
  }

  private schedule(): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.changed(true)) this.onChange();
    }, this.debounceMs);
    this.timer.unref();
  }

  /** True when any fingerprint differs from the last one seen; `update` records the new ones. */
  private changed(update: boolean): boolean {
    let changed = false;
    for (const [file, before] of this.last) {
      const now = fingerprint(file);
      if (now === before) continue;
      if (!update) return true;
      this.last.set(file, now);
      changed = true;
    }
    return changed;
  }
}

/** What changes when a file's content is replaced by any means; "missing:<code>" when it cannot be stat'ed. */
function fingerprint(file: string): string {
  try {
    const s = statSync(file, { bigint: true });
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch (err) {
    return `missing:${(err as NodeJS.ErrnoException).code ?? 'error'}`;
  }
}
