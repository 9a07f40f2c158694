import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BASE_DEPLOYMENT, baseMemorySettings, chartMemorySettings, quantityMiB } from '../bench/memory-limits.mjs';
import { parseConfig } from '../src/config/load.js';

// The memory settings ship in two places, the base Deployment and the chart's values; bench/memory.mjs measures the
// base's (its reader is the one under test here), so the chart must ship the same ones.

describe('shipped memory settings', () => {
  it('the chart default and the base Deployment ship the same V8 heap cap and memory limit', () => {
    const base = baseMemorySettings();
    const chart = chartMemorySettings();
    expect(base.nodeOptions).toEqual([`--max-old-space-size=${chart.nodeMaxOldSpaceMiB}`]);
    expect(chart.limitMiB).toBe(base.limitMiB);
  });

  it('the heap cap leaves room in the limit for both decision caches at the default cache.maxBytes, and for RSS outside the heap', () => {
    const { nodeOptions, limitMiB } = baseMemorySettings();
    const oldSpace = Number(/^--max-old-space-size=(\d+)$/.exec(nodeOptions[0]!)![1]);
    const cacheMiB = parseConfig({}).cache.maxBytes / 1048576;
    // Token and session caches full (2 x maxBytes) must fit in the old space, or V8 dies of heap exhaustion before the
    // caches evict; and the old space may not take the whole limit (young generation, code, buffers live outside it).
    expect(oldSpace).toBeGreaterThan(2 * cacheMiB);
    expect(oldSpace).toBeLessThanOrEqual(limitMiB / 2);
  });

  it('reads Kubernetes quantities, and refuses what it cannot read instead of guessing', () => {
    expect(quantityMiB('512Mi')).toBe(512);
    expect(quantityMiB('1Gi')).toBe(1024);
    expect(quantityMiB('2048Ki')).toBe(2);
    expect(quantityMiB('536870912')).toBe(512);
    expect(() => quantityMiB('512 MB')).toThrow('memory quantity: expected e.g. 512Mi, got "512 MB"');
    const dir = mkdtempSync(join(tmpdir(), 'memory-limits-'));
    const file = join(dir, 'deployment.yaml');
    writeFileSync(file, readFileSync(BASE_DEPLOYMENT, 'utf8').replace(/- name: NODE_OPTIONS\n\s+value: .*\n/, ''));
    expect(() => baseMemorySettings(file)).toThrow(/expected NODE_OPTIONS and resources.limits.memory/);
  });
});
