import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './ports.js';
import { toolMissing } from './tools.js';

/** A throw-away redis-server on 127.0.0.1 (no persistence) for one test file. */
export interface TestRedis {
  readonly port: number;
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  /** Kills the server and waits for it to exit; the port stays reserved for `restart`. */
  stop(): Promise<void>;
  /** Starts a fresh (empty) server on the same port. */
  restart(): Promise<void>;
  /** FLUSHALL. */
  flush(): Promise<void>;
  /** SIGSTOP / SIGCONT: connections stay open and nothing answers, as behind a black-holed network. */
  freeze(): void;
  thaw(): void;
}

const MISSING = 'redis-server not found: install it with `apt-get install -y redis-server` (or `bash scripts/install-tools.sh apt`)';

/**
 * Starts redis-server on a free port. Undefined (with a console message) when the binary is missing, so a test
 * file can skip its Redis half; when tools are required (CI, npm test) a missing binary is an error instead.
 */
export async function startRedis(): Promise<TestRedis | undefined> {
  if (!hasRedisBinary('redis-server')) return undefined;
  const port = await freePort();
  let child: ChildProcess | undefined;

  const start = async () => {
    child = await spawnRedis('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], port);
  };

  const stop = async () => {
    const proc = child;
    child = undefined;
    if (proc) await killRedis(proc);
  };

  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop,
    async restart() {
      await stop();
      await start();
    },
    freeze: () => child?.kill('SIGSTOP'),
    thaw: () => child?.kill('SIGCONT'),
    async flush() {
      const reply = await send(port, '*1\r\n$8\r\nFLUSHALL\r\n');
      if (!reply.startsWith('+OK')) throw new Error(`FLUSHALL: ${reply}`);
    },
  };
}

/** False (after `toolMissing`) when `binary --version` does not run. */
export function hasRedisBinary(binary: 'redis-server' | 'redis-sentinel' | 'redis-cli'): boolean {
  if (!spawnSync(binary, ['--version'], { stdio: 'ignore' }).error) return true;
  return toolMissing(binary === 'redis-server' ? MISSING : `${binary} not found: bash scripts/install-tools.sh apt`);
}

/** Starts `binary args` and resolves once it answers PING on `port`; rejects (with its output) if it exits or hangs. */
export async function spawnRedis(binary: string, args: string[], port: number): Promise<ChildProcess> {
  const proc = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const deadline = Date.now() + 10_000;
  while (!(await ping(port))) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`${binary} did not start on port ${port}:\n${output}`);
    }
    await sleep(20);
  }
  return proc;
}

/** SIGKILL (no shutdown, no save: a crash) and wait for the exit. */
export async function killRedis(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.kill('SIGKILL');
  await exited;
}


async function ping(port: number): Promise<boolean> {
  try {
    return (await send(port, '*1\r\n$4\r\nPING\r\n')).startsWith('+PONG');
  } catch {
    return false;
  }
}

/** One raw RESP command; resolves with the first reply line. */
function send(port: number, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let data = '';
    socket.setTimeout(2000, () => socket.destroy(new Error('timeout')));
    socket.once('error', reject);
    socket.once('connect', () => socket.write(command));
    socket.on('data', (chunk) => {
      data += chunk.toString();
      if (data.includes('\r\n')) {
        socket.end();
        resolve(data);
      }
    });
  });
}
