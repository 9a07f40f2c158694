import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** A real reverse proxy (nginx, Caddy) running on loopback for one test file. */
export interface TestProxy {
  readonly name: string;
  /** The loopback ports it listens on, in the order its config names them. */
  readonly ports: number[];
  /** Its temp directory (config, logs, temp files): removed by `close`. */
  readonly dir: string;
  /** The last lines it wrote (stderr, stdout and any `extraLog()`), for failure messages. */
  logs(): string;
  /** SIGTERM to its process group (SIGKILL after 5 s), then the temp dir is removed. */
  close(): Promise<void>;
}

export interface ProxyProcessOptions {
  name: string;
  binary: string;
  args: string[];
  dir: string;
  ports: number[];
  env?: NodeJS.ProcessEnv;
  /** More log text to show on failure (e.g. nginx's access log file). */
  extraLog?: () => string;
  timeoutMs?: number;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Spawns the proxy in its own process group (so nginx's workers go with the master even on SIGKILL) and resolves once
 * every port accepts connections; rejects with its output when it exits first (a config error) or hangs.
 */
export async function startProxyProcess(o: ProxyProcessOptions): Promise<TestProxy> {
  const lines: string[] = [];
  const keep = (chunk: Buffer) => {
    lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
    if (lines.length > 400) lines.splice(0, lines.length - 400);
  };
  const child: ChildProcess = spawn(o.binary, o.args, { cwd: o.dir, env: o.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const running = () => child.exitCode === null && child.signalCode === null;
  const signalGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      // the group is gone already
    }
  };
  // A worker that dies without afterAll must not leave the proxy running.
  const killOnExit = () => signalGroup('SIGKILL');
  process.once('exit', killOnExit);
  const logs = () => [...lines, ...(o.extraLog ? [o.extraLog()] : [])].join('\n');

  const close = async () => {
    process.removeListener('exit', killOnExit);
    if (running()) {
      signalGroup('SIGTERM');
      const timer = setTimeout(() => signalGroup('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(o.dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + (o.timeoutMs ?? 20_000);
  for (;;) {
    if (!running() || Date.now() > deadline) {
      const why = running() ? 'did not listen in time' : `exited (${child.exitCode ?? child.signalCode})`;
      const text = logs();
      await close();
      throw new Error(`${o.name} ${why} on ${o.ports.join(', ')}:\n${text}`);
    }
    if ((await Promise.all(o.ports.map(accepts))).every(Boolean)) break;
    await sleep(25);
  }
  return { name: o.name, ports: o.ports, dir: o.dir, logs, close };
}
