import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';

/** A tool binary run by a test support file, with its last log lines kept for failure messages. */
export interface ToolProcess {
  readonly child: ChildProcess;
  /** The process has exited (or was killed). */
  exited(): boolean;
  /** The last 300 lines it wrote (stdout and stderr). */
  logs(): string;
  /** SIGTERM (SIGKILL after 5 s), then `dir` is removed. */
  close(): Promise<void>;
}

/**
 * Spawns `binary args` in `dir` (a temp dir that `close` removes). A test worker that dies without its afterAll still
 * kills the process on exit.
 */
export function spawnTool(binary: string, args: string[], dir: string): ToolProcess {
  const lines: string[] = [];
  const keep = (chunk: Buffer) => {
    lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
    if (lines.length > 300) lines.splice(0, lines.length - 300);
  };
  const child = spawn(binary, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  return {
    child,
    exited: () => child.exitCode !== null || child.signalCode !== null,
    logs: () => lines.join('\n'),
    async close() {
      process.removeListener('exit', killOnExit);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
