import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two cores: browser and Redis suites start real processes; more parallel files only add contention.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
