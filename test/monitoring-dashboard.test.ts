/**
 * The shipped Grafana dashboard (deploy/components/monitoring/dashboard.json): valid against a structural schema of the
 * dashboard model (test/monitoring/dashboard.schema.json, written here; Grafana's own schema lives in AGPL code), laid
 * out without overlaps, every panel on the `datasource` variable, every `$variable` defined, and every PromQL
 * expression parsed by promtool (as recording rules in a generated rule file). That each metric it reads exists is
 * test/monitoring-metrics.test.ts's job, on a real server.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { ROOT, type Obj } from './support/manifests.js';
import { dashboard, findPromtool, panels, promtool, withoutGrafanaVariables, writeRuleFile } from './support/monitoring.js';

const bin = findPromtool();
const d = dashboard();
const all = panels(d);
const graphs = all.filter((p) => p.type !== 'row');
const variables = (d.templating.list as Obj[]).map((v) => v.name as string);
const BUILTIN = new Set(['__rate_interval', '__interval', '__range']);

/** Every target expression as a recording rule, named after its panel and refId, in one group. */
function asRules(exprs: Array<{ id: number; refId: string; expr: string }>): unknown {
  return [{ name: 'dashboard', rules: exprs.map((e) => ({ record: `dashboard:panel_${e.id}:${e.refId}`, expr: withoutGrafanaVariables(e.expr) })) }];
}
const targets = graphs.flatMap((p) => (p.targets as Obj[]).map((t) => ({ id: p.id as number, refId: t.refId as string, expr: t.expr as string })));

describe('the Grafana dashboard', () => {
  it('matches the structural schema of a dashboard model', () => {
    const schema = JSON.parse(readFileSync(join(ROOT, 'test/monitoring/dashboard.schema.json'), 'utf8')) as Obj;
    const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);
    expect(validate(d) ? [] : validate.errors).toEqual([]);
    // The schema can fail: a panel without targets is refused.
    const broken = structuredClone(d);
    delete broken.panels[1].targets;
    expect(validate(broken)).toBe(false);
  });

  it('has unique panel ids, refIds unique per panel, and panels that fit the 24-column grid without overlapping', () => {
    const ids = all.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of graphs) {
      const refs = (p.targets as Obj[]).map((t) => t.refId);
      expect(new Set(refs).size, `panel ${p.id}`).toBe(refs.length);
    }
    const cells = new Map<string, number>();
    for (const p of all) {
      const { x, y, w, h } = p.gridPos as Record<string, number>;
      expect(x! + w!, `panel ${p.id} "${p.title}" fits 24 columns`).toBeLessThanOrEqual(24);
      for (let i = x!; i < x! + w!; i++) for (let j = y!; j < y! + h!; j++) {
        const other = cells.get(`${i},${j}`);
        expect(other, `panel ${p.id} "${p.title}" overlaps panel ${other}`).toBeUndefined();
        cells.set(`${i},${j}`, p.id as number);
      }
    }
  });

  it('reads Prometheus through the datasource variable only, and uses only variables it defines', () => {
    const ds = (d.templating.list as Obj[]).find((v) => v.name === 'datasource')!;
    expect(ds).toMatchObject({ type: 'datasource', query: 'prometheus' });
    const ref = { type: 'prometheus', uid: '${datasource}' };
    for (const p of graphs) {
      expect(p.datasource, `panel ${p.id}`).toEqual(ref);
      for (const t of p.targets as Obj[]) expect(t.datasource, `panel ${p.id} ${t.refId}`).toEqual(ref);
    }
    const used = [...JSON.stringify(d.panels).matchAll(/\$\{?(\w+)/g)].map((m) => m[1]!);
    expect(used.filter((v) => !BUILTIN.has(v) && !variables.includes(v))).toEqual([]);
    // Each query is limited to the namespace picked at the top.
    for (const t of targets) expect(t.expr, `panel ${t.id} ${t.refId}`).toContain('namespace="$namespace"');
  });

  it('covers decisions, latency, the cache, issuers and providers, sessions and Redis, config reloads', () => {
    const rows = all.filter((p) => p.type === 'row').map((p) => p.title);
    expect(rows).toEqual(['Decisions', 'Latency', 'Cache', 'Issuers and providers', 'Sessions, logins and Redis', 'Config reloads']);
    const exprs = targets.map((t) => t.expr).join('\n');
    for (const q of ['0.5', '0.9', '0.99']) expect(exprs).toContain(`histogram_quantile(${q}, sum by (le) (rate(oidc_ext_authz_check_duration_seconds_bucket`);
    expect(exprs).toMatch(/sum by \(reason\) \(rate\(oidc_ext_authz_decisions_total\{namespace="\$namespace", result="deny"\}/);
    // Replicas on different configs show as more than one hash in the namespace.
    expect(exprs).toContain('count(count by (hash) (oidc_ext_authz_config_info{namespace="$namespace"}))');
    expect(exprs).toMatch(/sum by \(pod, outcome\) \(increase\(oidc_ext_authz_config_reloads_total\{namespace="\$namespace"\}/);
  });

  it.skipIf(bin === undefined)('every expression is PromQL that promtool parses', () => {
    expect(targets.length).toBeGreaterThan(20);
    const result = promtool(bin!, ['check', 'rules', writeRuleFile(asRules(targets))]);
    expect(result.output).toContain(`SUCCESS: ${targets.length} rules found`);
    expect(result.status).toBe(0);
    // The same check refuses a broken one.
    const broken = promtool(bin!, ['check', 'rules', writeRuleFile(asRules([{ id: 1, refId: 'A', expr: 'sum by (le (rate(x[$__rate_interval]))' }]))]);
    expect(broken.status).toBe(1);
  });
});
