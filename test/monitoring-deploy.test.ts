/**
 * The monitoring objects as shipped: the chart's ServiceMonitor, PrometheusRule and dashboard ConfigMap (`helm lint`,
 * `helm template`, each off by default and switched on alone), and deploy/components/monitoring added to an overlay
 * with kustomize. Both carry the component's rules and dashboard unchanged, and the ServiceMonitor scrapes the
 * Service's admin port as the job the rules select. (test/deploy-apiserver.test.ts applies them to a real API server.)
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { CHART, findRenderTools, renderChart, run, type Obj } from './support/manifests.js';
import { dashboard, DASHBOARD_FILE, MONITORING_HELM_VALUES, renderWithMonitoring, ruleGroups, RULES_FILE } from './support/monitoring.js';
import { toolMissing } from './support/tools.js';

const found = findRenderTools();
if (found.problem) toolMissing(found.problem);
const tools = found.tools;
const MONITORING_KINDS = ['ServiceMonitor', 'PrometheusRule'];

const isDashboard = (o: Obj) => o.kind === 'ConfigMap' && o.metadata.labels?.grafana_dashboard !== undefined;
const monitoringObjects = (objects: Obj[]) => objects.filter((o) => MONITORING_KINDS.includes(o.kind) || isDashboard(o));
const one = (objects: Obj[], kind: string) => {
  const all = objects.filter((o) => o.kind === kind);
  expect(all, kind).toHaveLength(1);
  return all[0]!;
};

/** The job the shipped rules expect Prometheus to give the service's targets: `up{job="..."}`. */
function ruleJob(): string {
  const jobs = new Set(ruleGroups().flatMap((g) => g.rules).flatMap((r) => [...r.expr.matchAll(/\bup\{job="([^"]+)"/g)].map((m) => m[1]!)));
  expect(jobs.size).toBe(1);
  return [...jobs][0]!;
}

/** The ServiceMonitor selects the Service, scrapes its admin port's /metrics, and names the job as the rules do. */
function checkScrape(objects: Obj[]): void {
  const monitor = one(objects, 'ServiceMonitor');
  const service = one(objects, 'Service');
  const namespaces: string[] = monitor.spec.namespaceSelector?.matchNames ?? [monitor.metadata.namespace];
  expect(namespaces).toContain(service.metadata.namespace);
  for (const [k, v] of Object.entries(monitor.spec.selector.matchLabels as Record<string, string>)) expect(service.metadata.labels?.[k], k).toBe(v);
  const [endpoint] = monitor.spec.endpoints as Obj[];
  expect(endpoint).toMatchObject({ port: 'http-admin', path: '/metrics' });
  const port = (service.spec.ports as Obj[]).find((p) => p.name === endpoint!.port)!;
  expect(port.port).toBe(9090);
  expect(service.metadata.labels[monitor.spec.jobLabel]).toBe(ruleJob());
}

describe.skipIf(!tools)('helm chart monitoring', () => {
  it('renders none of it by default', () => {
    expect(monitoringObjects(renderChart(tools!, [], 'helm (default)'))).toEqual([]);
  });

  it.each([
    ['serviceMonitor', 'ServiceMonitor'],
    ['prometheusRule', 'PrometheusRule'],
    ['dashboard', 'ConfigMap'],
  ])('monitoring.%s.enabled renders only its %s', (key, kind) => {
    const objects = monitoringObjects(renderChart(tools!, ['--set', `monitoring.${key}.enabled=true`], key));
    expect(objects.map((o) => o.kind)).toEqual([kind]);
  });

  it('helm lint passes with everything on', () => {
    expect(run(tools!.helm, ['lint', CHART, ...MONITORING_HELM_VALUES])).toMatch(/0 chart\(s\) failed/);
  });

  it('ships the component rules and dashboard unchanged, scrapes the admin port, and takes labels and namespaces', () => {
    const objects = renderChart(
      tools!,
      [
        ...MONITORING_HELM_VALUES,
        '--set', 'monitoring.serviceMonitor.labels.release=kps',
        '--set', 'monitoring.prometheusRule.labels.release=kps',
        '--set', 'monitoring.dashboard.namespace=grafana',
        '--set', 'monitoring.dashboard.annotations.grafana_folder=Identity',
      ],
      'helm (monitoring)',
    );
    checkScrape(objects);
    const rule = one(objects, 'PrometheusRule');
    expect(rule.spec).toEqual((parse(readFileSync(RULES_FILE, 'utf8')) as Obj).spec);
    expect(rule.spec.groups).toEqual(ruleGroups());
    // Prometheus' templates reach the object as written: helm must not have read them as its own.
    expect(JSON.stringify(rule.spec)).toContain('{{ $labels.pod }}');
    expect(one(objects, 'ServiceMonitor').metadata.labels.release).toBe('kps');
    expect(rule.metadata.labels.release).toBe('kps');
    const board = objects.find(isDashboard)!;
    expect(board.metadata).toMatchObject({ namespace: 'grafana', labels: { grafana_dashboard: '1' }, annotations: { grafana_folder: 'Identity' } });
    expect(board.data['oidc-ext-authz.json']).toBe(readFileSync(DASHBOARD_FILE, 'utf8'));
  });

  it('puts the dashboard under the label the Grafana sidecar is told to watch', () => {
    const objects = renderChart(
      tools!,
      ['--set', 'monitoring.dashboard.enabled=true', '--set', 'monitoring.dashboard.label=grafana_dashboards', '--set', 'monitoring.dashboard.labelValue=yes'],
      'helm (dashboard label)',
    );
    const board = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.labels?.grafana_dashboards === 'yes');
    expect(board, 'the ConfigMap with the configured label').toBeDefined();
    expect(JSON.parse(board!.data['oidc-ext-authz.json'] as string)).toEqual(dashboard());
  });
});

describe.skipIf(!tools)('deploy/components/monitoring', () => {
  it.each(['deploy/overlays/istio', 'deploy/overlays/kubeflow'])('added to %s: scrapes the admin port, ships the rules file and the dashboard as they are', (overlay) => {
    const objects = renderWithMonitoring(tools!.kustomize, overlay);
    checkScrape(objects);
    const rule = one(objects, 'PrometheusRule');
    expect(rule).toEqual(parse(readFileSync(RULES_FILE, 'utf8')));
    const board = objects.find(isDashboard)!;
    expect(board.metadata).toMatchObject({ name: 'oidc-ext-authz-dashboard', namespace: 'oidc-ext-authz', labels: { grafana_dashboard: '1' } });
    expect(board.data['oidc-ext-authz.json']).toBe(readFileSync(DASHBOARD_FILE, 'utf8'));
    // The NetworkPolicy lets the monitoring namespace reach that port.
    const policy = one(objects, 'NetworkPolicy');
    expect((policy.spec.ingress as Obj[]).some((rule) => (rule.ports as Obj[]).some((p) => p.port === 'http-admin' || p.port === 9090))).toBe(true);
  });
});
