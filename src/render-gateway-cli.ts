import { isIP } from 'node:net';
import type { Config } from './config/schema.js';
import { renderEnvoyGateway, renderIstioHttp } from './render-envoy-http.js';
import { renderCaddy, renderIngressNginx, renderNginx, renderTraefik, type RenderGatewayOptions } from './render-gateways.js';

/** The proxies `render` knows besides `istio` (the gRPC provider). */
export const GATEWAYS = ['nginx', 'ingress-nginx', 'caddy', 'traefik', 'istio-http', 'envoy-gateway'] as const;

/** The CLI's flags, as parseArgs gives them. */
export interface GatewayFlags {
  'auth-address'?: string | undefined;
  upstream?: string | undefined;
  'listen-port'?: string | undefined;
  'listen-address'?: string | undefined;
  host?: string | undefined;
  format?: string | undefined;
}

/**
 * One proxy's config for `config`, with the CLI's flags as options.
 * @throws {Error} for a flag value that is not one (a port that is not a number, a listen address that is not an IP,
 *   a Traefik format that is not crd/file).
 */
export function renderGateway(gateway: (typeof GATEWAYS)[number], config: Config, flags: GatewayFlags): string {
  const options: RenderGatewayOptions = {};
  if (flags['auth-address'] !== undefined) options.authAddress = flags['auth-address'];
  if (flags.upstream !== undefined) options.upstream = flags.upstream;
  if (flags.host !== undefined) options.host = flags.host;
  if (flags['listen-port'] !== undefined) {
    const port = Number(flags['listen-port']);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`--listen-port: expected 1-65535, got ${JSON.stringify(flags['listen-port'])}`);
    options.listenPort = port;
  }
  if (flags['listen-address'] !== undefined) {
    // An IP literal only: a host name would make nginx and Caddy listen on whatever it resolves to at start.
    if (isIP(flags['listen-address']) === 0) throw new Error(`--listen-address: expected an IPv4 or IPv6 address, got ${JSON.stringify(flags['listen-address'])}`);
    options.listenAddress = flags['listen-address'];
  }
  switch (gateway) {
    case 'nginx':
      return renderNginx(config, options);
    case 'ingress-nginx':
      return renderIngressNginx(config, options);
    case 'caddy':
      return renderCaddy(config, options);
    case 'traefik': {
      const format = flags.format ?? 'crd';
      if (format !== 'crd' && format !== 'file') throw new Error(`--format: expected crd or file, got ${JSON.stringify(format)}`);
      return renderTraefik(config, { ...options, format });
    }
    case 'istio-http':
      return renderIstioHttp(config);
    case 'envoy-gateway':
      return renderEnvoyGateway(config);
  }
}
