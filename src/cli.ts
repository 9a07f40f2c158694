#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ConfigError, configPathFrom, loadConfigFile } from './config/load.js';

const USAGE = `usage: oidc-ext-authz <command> [options]

commands:
  serve          run the ext_authz gRPC server        --config FILE (or OIDC_EXT_AUTHZ_CONFIG)
  check-config   validate a config, print every problem with its dotted path; exit 1 on error
  demo           run the local demo: IdP, gateway emulator, app and this service on loopback
  render istio   print the Istio meshConfig provider and AuthorizationPolicy for a config
  render nginx | ingress-nginx | caddy | traefik | istio-http | envoy-gateway
                 print that proxy's config for the HTTP listener (docs/gateways.md)
                 --auth-address HOST:PORT  --upstream HOST:PORT  --listen-port N  --host NAME  --format crd|file (traefik)
                 --listen-address IP (nginx, caddy; default every interface)
`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
      'auth-address': { type: 'string' },
      upstream: { type: 'string' },
      'listen-port': { type: 'string' },
      'listen-address': { type: 'string' },
      host: { type: 'string' },
      format: { type: 'string' },
    },
  });
  const [command, sub] = positionals;
  if (values.help || command === undefined) {
    process.stdout.write(USAGE);
    return command === undefined && !values.help ? 2 : 0;
  }
  switch (command) {
    case 'check-config': {
      const path = configPathFrom(values.config);
      const config = loadConfigFile(path);
      process.stdout.write(
        `${path}: ok (${config.routes.length} routes, ${config.issuers.length} bearer issuers, ${config.providers.length} OIDC providers)\n`,
      );
      return 0;
    }
    case 'serve': {
      const { serve } = await import('./main.js');
      const path = configPathFrom(values.config);
      await serve(loadConfigFile(path), path);
      return -1;
    }
    case 'demo': {
      const { runDemo } = await import('./demo.js');
      await runDemo();
      return -1;
    }
    case 'render': {
      // Rendered off-cluster: the in-pod files (CA bundle, token) are not there and are not needed to render.
      const load = () => loadConfigFile(configPathFrom(values.config), undefined, { runtimeFiles: false });
      if (sub === 'istio') {
        const { renderIstio } = await import('./render-istio.js');
        process.stdout.write(renderIstio(load()));
        return 0;
      }
      const { renderGateway, GATEWAYS } = await import('./render-gateway-cli.js');
      if (sub === undefined || !(GATEWAYS as readonly string[]).includes(sub)) break;
      process.stdout.write(renderGateway(sub as (typeof GATEWAYS)[number], load(), values));
      return 0;
    }
  }
  process.stderr.write(`unknown command: ${positionals.join(' ')}\n\n${USAGE}`);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(err instanceof ConfigError ? `${err.message}\n` : `error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
