import type { AddressInfo, Server, Socket } from 'node:net';

/** A listening server that closes with every connection it ever accepted. */
export interface Listening {
  url: string;
  port: number;
  /** Stops listening and destroys open connections (keep-alive and upgraded ones included). */
  close(): Promise<void>;
}

/**
 * Listens on host:port (port 0: any free one) and tracks connections so close() never waits on idle keep-alives.
 * `scheme` only names the URL (https for a TLS server).
 */
export async function listen(server: Server, host: string, port: number, scheme: 'http' | 'https' = 'http'): Promise<Listening> {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  return {
    url: `${scheme}://${address.address.includes(':') ? `[${address.address}]` : address.address}:${address.port}`,
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
