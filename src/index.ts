/** Public API for embedding and tests: build the service from a validated config. */
export { createApp, type App, type AppDeps } from './app.js';
export { loadConfigFile, parseConfig, parseConfigText, ConfigError, type ConfigIssue } from './config/load.js';
export type { Config } from './config/schema.js';
export { REASONS, type Reason } from './decision/reasons.js';
