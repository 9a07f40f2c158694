// Child processes of the benchmark: start (and wait until they listen), stop, and read their CPU time and peak RSS
// from /proc. Every server is a separate process so /proc/<pid>/stat counts its CPU and nothing else.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { closeSync, openSync, readFileSync, readdirSync } from 'node:fs';

/** A free loopback port (closed again before it is returned: fixed-port servers bind it next). */
export async function freePort() {
  const s = createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

const started = new Set();

/**
 * Spawns `command` with stdout and stderr going to `log` (a file: the harness never reads a server's output while it
 * is measured, so log lines cost the server what they cost in production and the harness nothing), and resolves once
 * `ready(text)` returns a value for the log so far. Rejects, with the log's tail, when the process exits first or
 * after `timeoutMs`.
 */
export async function startProcess(name, command, args, { ready, log, cwd, env, timeoutMs = 30_000 }) {
  const fd = openSync(log, 'w');
  const child = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  started.add(child);
  child.on('exit', () => started.delete(child));
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  child.on('exit', () => (exited = true));
  child.on('error', () => (exited = true));
  for (;;) {
    const text = readFileSync(log, 'utf8');
    const value = ready(text);
    if (value) return { name, child, pid: child.pid, log, ...value };
    if (exited || Date.now() > deadline) {
      child.kill('SIGKILL');
      const tail = text.split('\n').slice(-15).join('\n');
      throw new Error(`${name} ${exited ? `exited (${child.exitCode ?? child.signalCode})` : `not ready after ${timeoutMs} ms`}; log ${log}:\n${tail}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Ready when `count` JSON lines say `msg: 'listening'` (our server prints one per worker; the no-op server and the IdP
 * print one); the first one's fields are the result.
 */
export function jsonListening(count = 1) {
  return (text) => {
    const found = [];
    for (const line of text.split('\n')) {
      try {
        const e = JSON.parse(line);
        if (e.msg === 'listening') found.push(e);
      } catch {
        // not JSON
      }
    }
    return found.length >= count ? found[0] : undefined;
  };
}

/** SIGTERM, then SIGKILL if it is still there after `graceMs`. */
export async function stopProcess(p, graceMs = 3000) {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** Kills whatever is still running (used on the way out, also after a failure). */
export function killAll() {
  for (const child of started) child.kill('SIGKILL');
}

/** The pid and every descendant's pid (a cluster primary and its workers). */
export function processTree(pid) {
  const children = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const ppid = Number(readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1].split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  const out = [];
  const walk = (p) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** utime + stime of the process and its live descendants, in seconds. */
export function cpuSeconds(pids) {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      // gone
    }
  }
  return ticks / TICKS_PER_SECOND;
}

/** Peak resident set (VmHWM) in MiB, summed over the processes. */
export function peakRssMiB(pids) {
  let kb = 0;
  for (const pid of pids) {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) kb += Number(m[1]);
    } catch {
      // gone
    }
  }
  return kb / 1024;
}

/** Current resident set (VmRSS) in MiB. */
export function rssMiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}
