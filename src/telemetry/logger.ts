import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * JSON logs. Anything that could carry a credential is redacted by path as a second line of defence:
 * the code never passes tokens, cookies, codes or secrets to the logger in the first place.
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  // Asynchronous stdout: a synchronous write(2) per deny line was most of the cost of a denied check under load
  // (bench: api-401). Writes are not delayed (no minimum batch), only coalesced while one is in flight; the
  // server flushes before it exits (main.ts).
  return pino(
    {
      level,
      base: { service: 'oidc-ext-authz' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: [
          'token',
          'cookie',
          'code',
          'secret',
          'headers.authorization',
          'headers.cookie',
          'headers["set-cookie"]',
          '*.token',
          '*.cookie',
          '*.secret',
          '*.clientSecret',
          '*.refreshToken',
          '*.accessToken',
          '*.idToken',
        ],
        censor: '[redacted]',
      },
    },
    (destination ?? pino.destination({ dest: 1, sync: false })) as never,
  );
}
