import { mkdirSync, mkdtempSync, readlinkSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A directory updated the way kubelet updates a ConfigMap or Secret volume (pkg/volume/util/atomic_writer.go):
 * the files go into a new `..<timestamp>` directory, a `..data_tmp` symlink to it is renamed over `..data`, and each
 * visible name is a symlink `name -> ..data/name`. A file is never written in place, so only a watch on the directory
 * sees the change. `write` is synchronous, as the rename is atomic for a reader.
 */
export class ProjectedVolume {
  private serial = 0;

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  /** Path of a visible file. */
  path(name: string): string {
    return join(this.dir, name);
  }

  /** Projects exactly `files` (names without "/"): new ones appear, missing ones disappear, all at one rename. */
  write(files: Record<string, string>): void {
    const data = join(this.dir, '..data');
    let old: string | undefined;
    try {
      old = readlinkSync(data);
    } catch {
      old = undefined;
    }
    const stamp = new Date().toISOString().replace(/[-:T]/g, '_').replace('Z', '');
    const ts = mkdtempSync(join(this.dir, `..${stamp}.${this.serial++}.`));
    for (const [name, text] of Object.entries(files)) writeFileSync(join(ts, name), text);
    for (const name of Object.keys(files)) {
      try {
        readlinkSync(join(this.dir, name));
      } catch {
        symlinkSync(join('..data', name), join(this.dir, name));
      }
    }
    const tmp = join(this.dir, '..data_tmp');
    symlinkSync(ts.slice(this.dir.length + 1), tmp);
    renameSync(tmp, data);
    for (const name of readdirSync(this.dir)) {
      if (!name.startsWith('..') && !(name in files)) rmSync(join(this.dir, name));
    }
    if (old !== undefined) rmSync(join(this.dir, old), { recursive: true, force: true });
  }
}
