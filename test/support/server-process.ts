import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const CLI = join(import.meta.dirname, '..', '..', 'dist', 'cli.js');

/** `node dist/cli.js serve` as a real process, with the ports it logged when it started listening. */
export interface ServerProcess {
  child: ChildProcess;
  grpcPort: number;
  adminPort: number;
  exit: Promise<number | null>;
}

/**
 * Starts the built CLI and resolves once it logs its bound ports. `children` (optional) gets the process at once, so a
 * caller can kill it even if it never starts listening.
 */
export async function startServerProcess(configFile: string, children?: ChildProcess[]): Promise<ServerProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', '--config', configFile], { stdio: ['ignore', 'pipe', 'inherit'] });
  children?.push(child);
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const lines = createInterface({ input: child.stdout! });
  const ports = await new Promise<{ grpcPort: number; adminPort: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start')), 20_000);
    lines.on('line', (line) => {
      const entry = JSON.parse(line) as { msg?: string; grpcPort?: number; adminPort?: number };
      if (entry.msg === 'listening') {
        clearTimeout(timer);
        resolve({ grpcPort: entry.grpcPort!, adminPort: entry.adminPort! });
      }
    });
  });
  return { child, exit, ...ports };
}
