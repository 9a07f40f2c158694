import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { configSchema, type Config, type SecretRef } from './schema.js';
import { validateConfig, type ConfigIssue } from './validate.js';

export type { ConfigIssue } from './validate.js';

/** Thrown when a configuration cannot be used; `issues` lists every problem, not just the first. */
export class ConfigError extends Error {
  readonly code = 'ERR_CONFIG_INVALID';
  readonly issues: readonly ConfigIssue[];
  constructor(source: string, issues: readonly ConfigIssue[]) {
    super(`${source}: ${issues.length} problem(s)\n` + issues.map((i) => `  ${i.path || '(root)'}: ${i.message}`).join('\n'));
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

/** Where secrets and the config path come from; injected so tests control them. */
export interface ConfigEnvironment {
  env: Record<string, string | undefined>;
  readFile(path: string): string;
}

/** The real process: `process.env` and files read as UTF-8. */
export const processEnvironment: ConfigEnvironment = {
  env: process.env,
  readFile: (path) => readFileSync(path, 'utf8'),
};

/** How much of the validation to run; the defaults are what `check-config` and `serve` run. */
export interface ParseOptions {
  /**
   * `false` skips the checks of files only the running server reads (CA bundles, token files, the TLS pair), for
   * tools that only render the config elsewhere (`render istio` on a workstation has no in-pod CA). Default true.
   */
  runtimeFiles?: boolean;
}

/** The config path from `--config`, else `OIDC_EXT_AUTHZ_CONFIG`. */
export function configPathFrom(flag: string | undefined, env: Record<string, string | undefined> = process.env): string {
  const path = flag ?? env.OIDC_EXT_AUTHZ_CONFIG;
  if (!path) throw new ConfigError('config', [{ path: '', message: 'no config file: pass --config FILE or set OIDC_EXT_AUTHZ_CONFIG' }]);
  return path;
}

/** Reads, parses, validates and freezes a YAML (or JSON) config file. */
export function loadConfigFile(path: string, environment: ConfigEnvironment = processEnvironment, options: ParseOptions = {}): Config {
  let text: string;
  try {
    text = environment.readFile(path);
  } catch (err) {
    throw new ConfigError(path, [{ path: '', message: `cannot read file: ${(err as NodeJS.ErrnoException).code ?? String(err)}` }]);
  }
  return parseConfigText(text, path, environment, options);
}

/** Parses config text; YAML syntax errors are reported with line and column. */
export function parseConfigText(text: string, source: string, environment: ConfigEnvironment = processEnvironment, options: ParseOptions = {}): Config {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      source,
      doc.errors.map((e) => ({ path: '', message: `YAML: ${e.message.split('\n')[0]}` })),
    );
  }
  return parseConfig(doc.toJS() ?? {}, source, environment, options);
}

/**
 * The one validation, run by `check-config` and `serve` alike: the schema, then `validateConfig` (cross-references,
 * files the server will read), then secrets resolved from env and files; the result is deep-frozen.
 */
export function parseConfig(
  input: unknown,
  source = 'config',
  environment: ConfigEnvironment = processEnvironment,
  options: ParseOptions = {},
): Config {
  const parsed = configSchema.safeParse(input);
  if (!parsed.success) {
    throw new ConfigError(
      source,
      parsed.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message })),
    );
  }
  const config = parsed.data;
  const issues = [...validateConfig(config, options.runtimeFiles === false ? undefined : environment), ...resolveSecrets(config, environment)];
  if (issues.length > 0) throw new ConfigError(source, issues);
  return deepFreeze(config);
}

/** Replaces every secret reference by `{ value }`, so the rest of the program never reads env or files. */
function resolveSecrets(config: Config, environment: ConfigEnvironment): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const resolve = (ref: SecretRef, path: string): SecretRef => {
    if (typeof ref === 'string' || 'value' in ref) return { value: typeof ref === 'string' ? ref : ref.value };
    if ('env' in ref) {
      const value = environment.env[ref.env];
      if (!value) issues.push({ path, message: `environment variable ${ref.env} is not set or empty` });
      return { value: value ?? '' };
    }
    try {
      const value = environment.readFile(ref.file).trim();
      if (!value) issues.push({ path, message: `secret file ${ref.file} is empty` });
      return { value };
    } catch (err) {
      issues.push({ path, message: `cannot read secret file ${ref.file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` });
      return { value: '' };
    }
  };
  config.providers.forEach((p, i) => {
    if (p.clientSecret !== undefined) p.clientSecret = resolve(p.clientSecret, `providers.${i}.clientSecret`);
  });
  for (const [name, ref] of Object.entries(config.tracing.headers)) config.tracing.headers[name] = resolve(ref, `tracing.headers.${name}`);
  if (config.session) {
    const session = config.session;
    session.keys = session.keys.map((k, i) => resolve(k, `session.keys.${i}`));
    session.keys.forEach((k, i) => {
      const value = secretValue(k);
      if (value && decodeKey(value) === undefined) {
        issues.push({ path: `session.keys.${i}`, message: 'expected 32 random bytes, base64 or hex encoded (openssl rand -base64 32)' });
      }
    });
    if (session.redis?.password !== undefined) session.redis.password = resolve(session.redis.password, 'session.redis.password');
  }
  return issues;
}

/** The value of a resolved secret. */
export function secretValue(ref: SecretRef): string {
  if (typeof ref === 'string') return ref;
  if ('value' in ref) return ref.value;
  throw new Error('secret was not resolved by parseConfig');
}

/** Decodes a 32-byte key from hex or base64(url); undefined when it is not exactly 32 bytes. */
export function decodeKey(text: string): Buffer | undefined {
  const key = /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
  return key.length === 32 ? key : undefined;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
