import { isLoopbackHost } from '../http/authority.js';
import type { Config } from './schema.js';

/**
 * Rules on `tracing` the schema cannot express. They apply whether or not tracing is enabled, so turning it on later
 * cannot reveal a problem that `check-config` passed. (Issues are `ConfigIssue`s; validate.ts imports this file.)
 */
export function tracingProblems(config: Config): { path: string; message: string }[] {
  const issues: { path: string; message: string }[] = [];
  const { endpoint, headers } = config.tracing;
  const url = new URL(endpoint);
  // A URL is printed in logs and errors; credentials belong in headers, which come from secret files.
  if (url.username !== '' || url.password !== '') {
    issues.push({ path: 'tracing.endpoint', message: 'expected no user:password in the URL; put credentials in tracing.headers (secret references)' });
  }
  if (url.search !== '' || url.hash !== '') {
    issues.push({ path: 'tracing.endpoint', message: `expected a URL without query or fragment, got ${url.origin}${url.pathname}?...` });
  }
  // Export headers carry a collector token: plain http would hand it to anyone on the path.
  if (Object.keys(headers).length > 0 && url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    issues.push({ path: 'tracing.headers', message: `refusing to send export headers over plain http to ${url.host}; use https or a loopback collector` });
  }
  return issues;
}
