// Real memory per bearer cache entry against what the cache counts (cache.maxBytes must bound memory, not a guess).
//   npm run build && node --expose-gc bench/entry-size.mjs [N=100000]
// Fills a DecisionCache with N realistic entries (identity, pre-encoded allow, header-name set) built by the same
// code the Decider uses, then compares heap + external growth after full GCs with the cache's own byte count.
import { DecisionCache } from '../dist/check/cache.js';
import { encodeAllowParts } from '../dist/check/wire/check-codec.js';
import { parseConfig } from '../dist/config/load.js';
import { IdentityHeaders } from '../dist/identity/headers.js';
import { Metrics } from '../dist/telemetry/metrics.js';
import { ENTRY_OVERHEAD_BYTES, identityBytes } from '../dist/check/cache.js';

if (typeof gc !== 'function') throw new Error('run with node --expose-gc');
const N = Number(process.argv[2] ?? 100_000);
const headers = new IdentityHeaders(parseConfig({}).identity);
const cache = new DecisionCache({ maxEntries: N + 1, maxBytes: 2 ** 40, now: Date.now, metrics: new Metrics(), name: 'bench' });
const used = () => {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
};
const before = used();
for (let i = 0; i < N; i++) {
  const identity = { user: `user${i}@example.com`, email: `user${i}@example.com`, groups: ['ml-team', `team-${i % 50}`], preferredUsername: `user${i}`, subject: `sub-${i}-0123456789`, source: 'corp' };
  const allow = headers.allow(identity, { removeAuthorization: true });
  const parts = encodeAllowParts(allow);
  const entry = { ok: true, identity, issuer: 'corp', parts, setNames: headers.setNames(allow), expiresAt: Date.now() + 3_600_000, size: parts.size + identityBytes(identity) + ENTRY_OVERHEAD_BYTES };
  await cache.getOrLoad(DecisionCache.key(`token-${i}`), async () => entry);
}
const real = (used() - before) / N;
const counted = cache.bytes / N;
console.log(`${N.toLocaleString('en-US')} entries: ${real.toFixed(0)} B real (heap + external) per entry, ${counted.toFixed(0)} B counted per entry: counted/real = ${(counted / real).toFixed(2)}`);
