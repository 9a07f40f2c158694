import { createApp, type App } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import { startGateway, type Gateway } from '../../src/emulator/gateway.js';
import { createLogger } from '../../src/telemetry/logger.js';
import type { Stack } from './stack.js';

/** One more product replica next to a stack: the stack's config changed by `patch`, behind its own gateway. */
export interface Replica {
  app: App;
  gateway: Gateway;
  /** The gateway's port: pass it as `connectPort` so the browser keeps the stack's host name (and redirect URI). */
  port: number;
  close(): Promise<void>;
}

/**
 * Starts a replica of `stack` with a patched config (other session keys, bearer issuers ...). `now` is the replica's
 * clock in epoch milliseconds. The config is the stack's parsed config re-parsed after `patch`, so every default and
 * the provider's client stay identical.
 */
export async function startReplica(stack: Stack, patch: (raw: Record<string, any>) => void, now: () => number = Date.now): Promise<Replica> {
  const raw = JSON.parse(JSON.stringify(stack.config)) as Record<string, any>;
  patch(raw);
  const app = createApp(parseConfig(raw), { logger: createLogger(process.env.OIDC_TEST_LOG ?? 'silent'), now });
  await app.start();
  const gateway = await startGateway({ authzAddress: `127.0.0.1:${app.grpcPort}`, upstream: stack.echo.url });
  return {
    app,
    gateway,
    port: gateway.port,
    async close() {
      await gateway.close();
      await app.stop();
    },
  };
}
