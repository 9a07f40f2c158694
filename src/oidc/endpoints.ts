import type * as client from 'openid-client';
import type { ProviderConfig } from '../config/schema.js';

/** The discovery metadata field each `providers[].endpoints` key replaces. */
const METADATA_FIELDS = {
  authorization: 'authorization_endpoint',
  endSession: 'end_session_endpoint',
  token: 'token_endpoint',
  jwks: 'jwks_uri',
  userinfo: 'userinfo_endpoint',
  revocation: 'revocation_endpoint',
} as const satisfies Record<Exclude<keyof ProviderConfig['endpoints'], 'discovery'>, keyof client.ServerMetadata>;

/** The metadata fields this service itself calls (every other endpoint is only ever shown to the browser). */
const SERVER_FIELDS = ['token_endpoint', 'jwks_uri', 'userinfo_endpoint', 'revocation_endpoint'] as const;

/**
 * Where the discovery document is fetched from: `endpoints.discovery` (a full `.well-known` URL, e.g. the in-cluster
 * address of an IdP whose issuer is its public URL), else the issuer itself (openid-client appends the well-known path).
 */
export function discoveryUrl(config: ProviderConfig): URL {
  return new URL(config.endpoints.discovery ?? config.issuer);
}

/**
 * The split-horizon server metadata of a provider: the discovered document (none with `skipDiscovery`) with every
 * endpoint the config gives put in its place. `issuer` is always the configured one, the exact `iss` every ID token
 * must carry: a document that names another issuer was refused before this (see `checkIssuer`), and nothing here
 * ever rewrites it.
 */
export function splitHorizonMetadata(config: ProviderConfig, discovered: client.ServerMetadata | undefined): client.ServerMetadata {
  const overrides: Partial<Record<(typeof METADATA_FIELDS)[keyof typeof METADATA_FIELDS], string>> = {};
  for (const key of Object.keys(METADATA_FIELDS) as (keyof typeof METADATA_FIELDS)[]) {
    const url = config.endpoints[key];
    if (url !== undefined) overrides[METADATA_FIELDS[key]] = url;
  }
  const metadata: client.ServerMetadata = { ...discovered, ...overrides, issuer: config.issuer };
  return metadata;
}

/**
 * Throws unless a document fetched from `endpoints.discovery` names exactly the configured issuer, byte for byte, as
 * ID tokens' `iss` will be compared (OIDC Discovery 4.3). openid-client makes that comparison itself only when it
 * builds the well-known URL from the issuer.
 */
export function checkIssuer(config: ProviderConfig, discovered: client.ServerMetadata): void {
  if (discovered.issuer !== config.issuer) {
    throw new Error(`discovery document at ${discoveryUrl(config).href} names issuer ${JSON.stringify(discovered.issuer)}, expected ${JSON.stringify(config.issuer)}`);
  }
}

/** Whether any URL this service calls for `metadata` is plain http (openid-client refuses those unless told). */
export function callsPlainHttp(metadata: client.ServerMetadata): boolean {
  return SERVER_FIELDS.some((field) => {
    const url = metadata[field];
    return typeof url === 'string' && url.startsWith('http:');
  });
}
