import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { parse, stringify } from 'yaml';
import { findTool } from './find-tool.js';
import { parseManifests, ROOT, run, type Obj } from './manifests.js';
import { toolMissing } from './tools.js';

/** deploy/components/monitoring: the one copy of the rules and the dashboard (the chart links to these files). */
export const MONITORING_DIR = join(ROOT, 'deploy/components/monitoring');
export const RULES_FILE = join(MONITORING_DIR, 'prometheusrule.yaml');
export const DASHBOARD_FILE = join(MONITORING_DIR, 'dashboard.json');

/** One rule of a Prometheus rule group. */
export interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** The rule groups of the shipped PrometheusRule (its `spec.groups`). */
export function ruleGroups(): Array<{ name: string; rules: Rule[] }> {
  return (parse(readFileSync(RULES_FILE, 'utf8')) as Obj).spec.groups;
}

/** Every rule of every group. */
export const allRules = (): Rule[] => ruleGroups().flatMap((g) => g.rules);

/** The shipped dashboard, parsed. */
export const dashboard = (): Obj => JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as Obj;

/** The panels of a dashboard, with those nested in collapsed rows. */
export function panels(d: Obj): Obj[] {
  return (d.panels as Obj[]).flatMap((p) => [p, ...((p.panels as Obj[] | undefined) ?? [])]);
}

/**
 * Grafana's built-in interval variables replaced by a duration, so an expression can be parsed as PromQL. Any other
 * `$variable` must sit inside a label matcher's quotes, where PromQL reads it as text.
 */
export function withoutGrafanaVariables(expr: string): string {
  return expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '5m');
}

/**
 * The metric names an expression reads: this service's `oidc_ext_authz_*` series and `up` (recording-rule names,
 * `level:metric:operation`, are left out). Quoted strings are dropped first, so label values never count.
 */
export function metricNames(expr: string): Set<string> {
  const code = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  return new Set([...code.matchAll(/\b(oidc_ext_authz_[a-z0-9_]+|up)\b(?!\s*\()/g)].map((m) => m[1]!));
}

/**
 * The series names a /metrics text exposes, from its `# TYPE` lines (so a metric with no sample yet still counts): a
 * histogram `x` exposes `x_bucket`, `x_sum` and `x_count`.
 */
export function exposedNames(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m;
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) out.add(`${name}${s}`);
    else out.add(name!);
  }
  return out;
}

/** promtool from .cache/tools/bin ($PROMTOOL first); a missing one fails CI and npm test (toolMissing). */
export function findPromtool(): string | undefined {
  const found = findTool('promtool', 'PROMTOOL');
  if (found === undefined) toolMissing('promtool is not installed: bash scripts/install-tools.sh promtool');
  return found;
}

/** Runs promtool; resolves to its exit status and output. */
export function promtool(bin: string, args: string[], input?: string): { status: number | null; output: string } {
  const r = spawnSync(bin, args, { encoding: 'utf8', input, timeout: 60_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}${r.error ? String(r.error) : ''}` };
}

/** Writes `groups` as a Prometheus rule file (`groups:` at the top) in a new temporary directory; returns its path. */
export function writeRuleFile(groups: unknown, name = 'rules.yaml'): string {
  const dir = mkdtempSync(join(tmpdir(), 'oidc-ext-authz-rules-'));
  const file = join(dir, name);
  writeFileSync(file, stringify({ groups }));
  return file;
}

/** Helm values that switch every monitoring object on (the chart's `monitoring.*`). */
export const MONITORING_HELM_VALUES = [
  '--set', 'monitoring.serviceMonitor.enabled=true',
  '--set', 'monitoring.prometheusRule.enabled=true',
  '--set', 'monitoring.dashboard.enabled=true',
];

/**
 * `kustomize build` of a throw-away kustomization that lists `overlay` (under deploy/) and the monitoring component,
 * the way a user adds the component to their overlay: by a relative path under `components:`.
 */
export function renderWithMonitoring(kustomize: string, overlay: string): Obj[] {
  const dir = mkdtempSync(join(tmpdir(), 'monitoring-render-'));
  try {
    const lines = [
      'apiVersion: kustomize.config.k8s.io/v1beta1',
      'kind: Kustomization',
      'resources:',
      `  - ${relative(dir, join(ROOT, overlay))}`,
      'components:',
      `  - ${relative(dir, MONITORING_DIR)}`,
    ];
    writeFileSync(join(dir, 'kustomization.yaml'), `${lines.join('\n')}\n`);
    return parseManifests(run(kustomize, ['build', dir]), `${overlay} + deploy/components/monitoring`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const CRD_DIR = join(ROOT, '.cache/crds/prometheus-operator');

/**
 * The ServiceMonitor and PrometheusRule CRDs that scripts/install-tools.sh takes from the prometheus-operator module
 * (run here when they are missing), or the problem that stopped it.
 */
export function findMonitoringCrds(): { files: string[]; problem?: string } {
  const files = ['servicemonitors', 'prometheusrules'].map((n) => join(CRD_DIR, `monitoring.coreos.com_${n}.yaml`));
  const present = () => files.every((f) => existsSync(f));
  if (!present()) {
    const r = spawnSync('bash', [join(ROOT, 'scripts/install-tools.sh'), 'crds'], { cwd: ROOT, encoding: 'utf8', timeout: 5 * 60_000 });
    if (!present()) {
      const why = r.error ? String(r.error) : `exit ${r.status}: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`;
      return { files, problem: `the monitoring.coreos.com CRDs are missing from ${CRD_DIR} (${why}): bash scripts/install-tools.sh crds` };
    }
  }
  return { files };
}
