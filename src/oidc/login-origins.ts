import { RedirectGuard } from './redirect-target.js';

/**
 * `providers[].loginOrigins`: the origins (scheme, host pattern, port) a login may start on, so a redirect_uri and a
 * login cookie are only ever made for a host the operator named, never for whatever `:authority` a client sent.
 * Hosts match as `session.allowedRedirectHosts` do (one rule: RedirectGuard's exact or dot-boundary host and port);
 * the scheme must match too, so listing `http://localhost:8080` does not allow `http://kubeflow.example.com`.
 */
export class LoginOrigins {
  private readonly byScheme: ReadonlyMap<string, RedirectGuard>;

  /** `origins` as the schema checked them: `http(s)://<host pattern>[:port]`. */
  constructor(origins: readonly string[]) {
    const patterns = new Map<string, string[]>([
      ['https:', []],
      ['http:', []],
    ]);
    for (const origin of origins) {
      const split = origin.indexOf('//');
      patterns.get(origin.slice(0, split).toLowerCase())?.push(origin.slice(split + 2).toLowerCase());
    }
    this.byScheme = new Map([...patterns].map(([scheme, hosts]) => [scheme, new RedirectGuard(hosts)]));
  }

  /** Whether a login may start on `origin` (canonical `scheme://host[:port]`, see RedirectGuard.origin). */
  allows(origin: string): boolean {
    const url = new URL(origin);
    return this.byScheme.get(url.protocol)?.allowsHost(url) ?? false;
  }
}
