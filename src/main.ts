import cluster from 'node:cluster';
import { createApp, type App } from './app.js';
import type { Config } from './config/schema.js';

/**
 * Entry for `serve`: build, listen, and stop cleanly on SIGTERM/SIGINT. No logic of its own.
 * With `server.grpc.workers: N`, the primary forks N workers that share the gRPC and admin ports (Node's cluster
 * module hands connections out round-robin); each worker has its own caches, and /metrics shows the worker that answers.
 * `parseConfig` has refused workers with port 0, so every worker shares the same fixed ports.
 * With `path` (the file `config` came from), the config hot-reloads: on a change to it or the files it names, and on
 * SIGHUP (the primary passes SIGHUP on to its workers, each of which reloads itself).
 */
export async function serve(config: Config, path?: string): Promise<App | undefined> {
  const workers = config.server.grpc.workers;
  if (workers > 0 && cluster.isPrimary) {
    let stopping = false;
    for (let i = 0; i < workers; i++) cluster.fork();
    cluster.on('exit', (worker, code) => {
      if (!stopping) {
        process.stderr.write(`worker ${worker.process.pid} exited (${code}); starting another\n`);
        cluster.fork();
      } else if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
    });
    const stop = () => {
      stopping = true;
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    process.on('SIGHUP', () => {
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGHUP');
    });
    return undefined;
  }

  const app = createApp(config, path === undefined ? {} : { reload: { path } });
  // Before start: without a handler a SIGHUP that arrives while starting would end the process.
  process.on('SIGHUP', () => void app.reload('signal'));
  await app.start();
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.logger.info({ signal }, 'shutting down');
    // Logs are written asynchronously: flush them before exiting, or the last lines (the drain) would be lost.
    const exit = (code: number) => app.logger.flush(() => process.exit(code));
    app.stop().then(
      () => exit(0),
      (err: unknown) => {
        app.logger.error({ err: String(err) }, 'shutdown failed');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  return app;
}
