/**
 * The shipped alert rules (deploy/components/monitoring/prometheusrule.yaml, the one copy the chart and the kustomize
 * component ship) checked by Prometheus' own promtool: `check rules` (syntax, PromQL, templates), `test rules` with the
 * cases in test/monitoring/alerts.promtool-test.yaml (each alert fires once and stays quiet once), and their runbooks
 * in docs/operations.md.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ROOT, type Obj } from './support/manifests.js';
import { allRules, findPromtool, promtool, ruleGroups, writeRuleFile } from './support/monitoring.js';

const bin = findPromtool();
const UNIT_TESTS = join(ROOT, 'test/monitoring/alerts.promtool-test.yaml');

/** `promtool test rules` on the cases file beside `groups` written as rules.yaml (the name the cases load). */
function testRules(groups: unknown, cases = readFileSync(UNIT_TESTS, 'utf8')): { status: number | null; output: string } {
  const rules = writeRuleFile(groups);
  const file = join(dirname(rules), 'cases.yaml');
  writeFileSync(file, cases);
  return promtool(bin!, ['test', 'rules', file]);
}

const alerts = allRules().filter((r) => r.alert !== undefined);

describe.skipIf(bin === undefined)('promtool on the shipped rules', () => {
  it('check rules: every rule parses and its templates render', () => {
    const result = promtool(bin!, ['check', 'rules', writeRuleFile(ruleGroups())]);
    expect(result.output).toMatch(new RegExp(`SUCCESS: ${allRules().length} rules found`));
    expect(result.status).toBe(0);
  });

  it('check rules refuses a broken expression (the check can fail)', () => {
    const groups = structuredClone(ruleGroups());
    groups[1]!.rules[0]!.expr = 'rate(oidc_ext_authz_decisions_total[5m]';
    const result = promtool(bin!, ['check', 'rules', writeRuleFile(groups)]);
    expect(result.status).toBe(1);
    expect(result.output).toMatch(/unclosed left parenthesis|parse error/);
  });

  it('test rules: every case passes', () => {
    const result = testRules(ruleGroups());
    expect(result.output).toContain('SUCCESS');
    expect(result.status).toBe(0);
  });

  it('test rules fails when a threshold moves (the cases pin the rules)', () => {
    const groups = structuredClone(ruleGroups());
    const latency = groups.flatMap((g) => g.rules).find((r) => r.alert === 'OidcExtAuthzCheckLatencyHigh')!;
    latency.expr = latency.expr.replace('> 0.25', '> 0.6');
    const result = testRules(groups);
    expect(result.status).toBe(1);
    expect(result.output).toMatch(/alertname: OidcExtAuthzCheckLatencyHigh/);
  });
});

describe('the alerts', () => {
  const cases = (parse(readFileSync(UNIT_TESTS, 'utf8')) as Obj).tests as Obj[];
  const checks = cases.flatMap((c) => (c.alert_rule_test as Obj[] | undefined) ?? []);

  it('are the ones documented, each with a unit case where it fires and one where it stays quiet', () => {
    expect(alerts.length).toBeGreaterThanOrEqual(12);
    for (const { alert } of alerts) {
      const mine = checks.filter((c) => c.alertname === alert);
      expect(mine.some((c) => (c.exp_alerts as Obj[]).length > 0), `${alert} fires in some case`).toBe(true);
      expect(mine.some((c) => (c.exp_alerts as Obj[]).length === 0), `${alert} stays quiet in some case`).toBe(true);
    }
    // A case for an alert that does not exist would pass vacuously.
    expect(checks.filter((c) => !alerts.some((a) => a.alert === c.alertname)).map((c) => c.alertname)).toEqual([]);
  });

  it('have a severity, a summary, a description and a runbook section in docs/operations.md', () => {
    const ops = readFileSync(join(ROOT, 'docs/operations.md'), 'utf8');
    const section = ops.slice(ops.indexOf('\n## Alerts\n'));
    expect(ops.indexOf('\n## Alerts\n')).toBeGreaterThan(-1);
    for (const a of alerts) {
      expect(['critical', 'warning', 'info'], a.alert).toContain(a.labels?.severity);
      expect(a.annotations?.summary, a.alert).toMatch(/\S/);
      expect(a.annotations?.description, a.alert).toMatch(/\S/);
      expect(a.annotations?.runbook, a.alert).toBe(`docs/operations.md#${a.alert!.toLowerCase()}`);
      // GitHub's anchor for "### OidcExtAuthzDown" is #oidcextauthzdown; the paragraph under it is the runbook.
      const at = section.indexOf(`\n### ${a.alert}\n`);
      expect(at, `docs/operations.md has "### ${a.alert}" under "## Alerts"`).toBeGreaterThan(-1);
      const body = section.slice(at + a.alert!.length + 6).split(/\n#{2,3} /)[0]!.trim();
      expect(body.length, `${a.alert}'s runbook paragraph`).toBeGreaterThan(150);
    }
  });
});
