import { createApp, type App } from './app.js';
import type { Config } from './config/schema.js';

/** Entry for `serve`: build, listen, and stop cleanly on SIGTERM/SIGINT. No logic of its own. */
export async function serve(config: Config): Promise<App> {
  const app = createApp(config);
  await app.start();
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.logger.info({ signal }, 'shutting down');
    app.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        app.logger.error({ err: String(err) }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  return app;
}
