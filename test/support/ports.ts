import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/**
 * The lowest port the kernel hands out for `listen(0)` and outgoing connections. A port picked inside that range and
 * released again can be taken by any other process (parallel test files, their HTTP clients) before our server
 * listens on it; picked below it, only another caller of `freePort` could take it.
 */
const EPHEMERAL_LOW = (() => {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
})();
const LOW = Math.max(10000, EPHEMERAL_LOW - 12000);

function tryListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * A loopback port that was free a moment ago, for servers whose URL must be known before they start (redirect
 * URIs, a Redis URL). Chosen at random below the ephemeral range, so `listen(0)` elsewhere never races for it.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = LOW + Math.floor(Math.random() * (EPHEMERAL_LOW - LOW));
    if (await tryListen(port)) return port;
  }
  throw new Error(`no free port found in ${LOW}..${EPHEMERAL_LOW - 1}`);
}
