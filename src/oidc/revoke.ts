import * as client from 'openid-client';
import type { SessionData } from '../session/types.js';
import type { Logger } from '../telemetry/logger.js';
import { describe, type OidcProvider } from './provider.js';

/** What became of a refresh token at the IdP. */
export type RevokeOutcome = 'revoked' | 'no_token' | 'unsupported' | 'failed';

/**
 * Revokes a session's refresh token at the IdP (RFC 7009, the `revocation_endpoint` from discovery), so that neither
 * a copy of the session (an old cookie, another replica) nor an offline session the IdP keeps after its own logout
 * can refresh again. Keycloak keeps offline sessions through RP-initiated logout; revoking the token ends them.
 *
 * Never throws: a logout must complete here even when the IdP cannot be reached. `unsupported` (no endpoint: Dex
 * v2.41) and `failed` are logged and counted (`revoke_error`); the token then dies with the IdP's own session rules.
 */
export async function revokeRefreshToken(provider: OidcProvider, session: Pick<SessionData, 'refreshToken'>, logger: Logger): Promise<RevokeOutcome> {
  const token = session.refreshToken;
  if (token === undefined) return 'no_token';
  const configuration = provider.configuration;
  if (configuration === undefined || configuration.serverMetadata().revocation_endpoint === undefined) {
    if (configuration === undefined) provider.count('revoke_error');
    return configuration === undefined ? 'failed' : 'unsupported';
  }
  try {
    await client.tokenRevocation(configuration, token, { token_type_hint: 'refresh_token' });
    provider.count('revoke_ok');
    return 'revoked';
  } catch (err) {
    provider.count('revoke_error');
    logger.warn({ provider: provider.name, detail: describe(err) }, 'refresh token revocation failed');
    return 'failed';
  }
}
