// Turns the rounds into the report: medians per scenario, ratios to the ceiling and to the peers computed inside each
// round (then the median), the issue's targets with met / not met, peak RSS; written as JSON, markdown and an SVG chart.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export function median(xs) {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
}

const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }) : '–');
const ms = (x) => (Number.isFinite(x) ? (x < 10 ? x.toFixed(2) : x.toFixed(1)) : '–');

/** Per-scenario medians and per-round ratios. */
export function summarize({ scenarios, runs }) {
  const byId = new Map(scenarios.map((s) => [s.id, s]));
  const rows = scenarios.map((s) => {
    const r = runs[s.id];
    const sat = r.map((x) => x.saturation);
    const fixed = r.map((x) => x.fixed).filter(Boolean);
    const ceiling = s.ceiling ? runs[s.ceiling] : undefined;
    return {
      id: s.id,
      title: s.title,
      group: s.group,
      ceiling: s.ceiling,
      server: s.server.name,
      tool: sat[0]?.tool,
      rps: median(sat.map((x) => x.rps)),
      rpsRuns: sat.map((x) => Math.round(x.rps)),
      ofCeiling: ceiling ? median(sat.map((x, i) => x.rps / ceiling[i]?.saturation.rps)) : undefined,
      p50: median(sat.map((x) => x.p50)),
      p90: median(sat.map((x) => x.p90)),
      p99: median(sat.map((x) => x.p99)),
      cpuUs: median(sat.map((x) => x.cpuUsPerCheck)),
      cpuUsRuns: sat.map((x) => Math.round(x.cpuUsPerCheck)),
      serverCores: median(sat.map((x) => x.serverCores)),
      companionCpuUs: median(sat.map((x) => x.companionCpuUsPerCheck)),
      fixed: fixed.length
        ? {
            rate: fixed[0].rate,
            ownRate: fixed.some((f) => f.ownRate),
            tool: fixed[0].tool,
            achieved: median(fixed.map((f) => f.rps)),
            p50: median(fixed.map((f) => f.p50)),
            p90: median(fixed.map((f) => f.p90)),
            p99: median(fixed.map((f) => f.p99)),
            cpuUs: median(fixed.map((f) => f.cpuUsPerCheck)),
          }
        : undefined,
      peerOf: s.peerOf,
      decisions: sat.at(-1)?.decisions,
    };
  });
  const comparisons = [];
  // peerOf: one of our scenarios, or several (oauth2-proxy is compared with our gRPC and our HTTP transport).
  for (const [s, oursId] of scenarios.flatMap((x) => [x.peerOf ?? []].flat().filter((id) => byId.has(id)).map((id) => [x, id]))) {
    const ours = runs[oursId].map((x) => x.saturation);
    const peer = runs[s.id].map((x) => x.saturation);
    comparisons.push({
      peer: s.id,
      ours: oursId,
      throughputRatio: median(ours.map((x, i) => x.rps / peer[i].rps)),
      cpuRatio: median(ours.map((x, i) => peer[i].cpuUsPerCheck / x.cpuUsPerCheck)),
    });
  }
  return { rows, comparisons };
}

function targets(rows, comparisons, memory) {
  const row = (id) => rows.find((r) => r.id === id);
  const out = [];
  for (const id of ['bearer-cached', 'session-cached']) {
    const r = row(id);
    if (r) out.push({ target: `${r.title}: >= 90% of the no-op ceiling's throughput`, result: `${fmt(r.ofCeiling * 100, 1)}% (${fmt(r.rps)} vs ceiling)`, met: r.ofCeiling >= 0.9 });
  }
  const floor = row('ceiling')?.fixed;
  for (const id of ['bearer-cached', 'session-cached']) {
    const r = row(id);
    if (r?.fixed) {
      out.push({
        target: `${r.title}: p99 <= 2 ms at ${fmt(r.fixed.rate)}/s (half the ceiling's rate)`,
        result: `p99 ${ms(r.fixed.p99)} ms (the no-op server's own p99 at that rate: ${ms(floor?.p99)} ms)`,
        met: r.fixed.p99 <= 2,
      });
    }
  }
  const cold = row('bearer-cold-rs256');
  if (cold) {
    out.push({
      target: 'cold RS256 (every token new): >= 5,000 checks/s per process',
      result: `${fmt(cold.rps)} checks/s measured; ${fmt(1e6 / cold.cpuUs)} checks per server CPU-second`,
      met: cold.rps >= 5000,
    });
  }
  for (const c of comparisons) {
    out.push({
      target: `more throughput and less CPU per decision than ${c.peer}`,
      result: `throughput x${c.throughputRatio.toFixed(2)}, CPU per decision: the peer uses x${c.cpuRatio.toFixed(2)} ours`,
      met: c.throughputRatio > 1 && c.cpuRatio > 1,
    });
  }
  // bench/memory.mjs: one row per flood run with the shipped Node options.
  for (const r of memory?.results?.filter((m) => m.shipped) ?? []) {
    out.push({
      target: `RSS within the manifests' limit and base + 2 x cache.maxBytes + ${memory.allowanceMiB} MiB, ${fmt(r.requests)} requests of the ${r.flood} flood`,
      result: r.summary,
      met: r.met,
    });
  }
  return out;
}

function markdown(report) {
  const { rows, comparisons, targets: goals, options: o, machine, versions, rss } = report;
  const byId = new Map(rows.map((r) => [r.id, r]));
  const lines = [];
  lines.push(
    `${report.quick ? 'QUICK run (CI smoke test: 1 short round, numbers not meaningful). ' : ''}${report.date}: ${o.rounds} rounds, medians; ` +
      `${o.seconds} s per saturation run after ${o.warmup} s warm-up, ${o.fixedSeconds} s at the fixed rate; ` +
      `${o.connections} HTTP/2 connections x ${o.streams} streams (HTTP/1.1 peers: ${o.connections * o.streams} connections). ` +
      `Fixed rate: ${fmt(o.fixedRate)} checks/s = half the no-op ceiling measured with ghz. ` +
      `${machine.cpus} x ${machine.model}, shared by servers and load generators. Node ${versions.node}, h2load ${versions.h2load}, ghz ${versions.ghz}` +
      `${versions.oauth2Proxy ? `, ${versions.oauth2Proxy}` : ''}${versions.opa ? `, opa-envoy-plugin ${versions.opa}` : ''}.`,
    '',
    '| scenario | server | load at saturation | checks/s | % of ceiling | p50 / p99 ms at saturation | p50 / p90 / p99 ms at the fixed rate | server CPU µs/check |',
    '|---|---|---|---:|---:|---:|---:|---:|',
  );
  for (const r of rows) {
    const f = r.fixed ? `${ms(r.fixed.p50)} / ${ms(r.fixed.p90)} / ${ms(r.fixed.p99)}${r.fixed.ownRate ? ` (at ${fmt(r.fixed.rate)}/s²)` : ''}` : '–';
    const ceiling = r.ofCeiling === undefined ? '' : `${fmt(r.ofCeiling * 100, 1)}%${r.ceiling === 'ceiling-ghz' ? ' (ghz)' : ''}`;
    const cpu = `${fmt(r.cpuUs, 0)}${Number.isFinite(r.companionCpuUs) ? ` (+ IdP ${fmt(r.companionCpuUs, 0)})` : ''}`;
    lines.push(`| ${r.title} | ${r.server} | ${r.tool} | ${fmt(r.rps)} | ${ceiling} | ${ms(r.p50)} / ${ms(r.p99)} | ${f} | ${cpu} |`);
  }
  if (rows.some((r) => r.fixed?.ownRate)) lines.push('', '² slower than the fixed rate at saturation: measured at half its own saturated rate instead.');
  if (comparisons.length) {
    lines.push('', '**Against the peers** (same credential, same cores, same concurrency; ratios computed per round, then the median):', '');
    lines.push('| credential | this server | peer | checks/s (ours / peer) | CPU µs per decision (ours / peer) | throughput ratio | peer CPU per decision |', '|---|---|---|---:|---:|---:|---:|');
    for (const c of comparisons) {
      const ours = byId.get(c.ours);
      const peer = byId.get(c.peer);
      const credential = c.ours.includes('session') ? 'session cookie' : c.ours.includes('bearer-cold') ? 'bearer JWT, every token new' : 'bearer JWT';
      lines.push(`| ${credential} | ${ours.title} | ${peer.title} | ${fmt(ours.rps)} / ${fmt(peer.rps)} | ${fmt(ours.cpuUs)} / ${fmt(peer.cpuUs)} | x${c.throughputRatio.toFixed(2)} | x${c.cpuRatio.toFixed(2)} |`);
    }
  }
  lines.push('', '**Targets** (from the issue):', '', '| target | result | met |', '|---|---|---|');
  for (const g of goals) lines.push(`| ${g.target} | ${g.result} | ${g.met ? 'yes' : '**no**'} |`);
  lines.push('', `**Peak RSS** (VmHWM, MiB; cluster: primary + workers): ${Object.values(rss).map((r) => `${r.name} ${fmt(r.mib, 1)}${r.processes > 1 ? ` (${r.processes} processes)` : ''}`).join(', ')}.`);
  lines.push('', `Per-round numbers: checks/s ${rows.map((r) => `${r.id} [${r.rpsRuns.join(', ')}]`).join('; ')}.`);
  return lines.join('\n');
}

const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const COLORS = { ceiling: '#9e9e9e', ours: '#1f77b4', workers: '#6baed6', peer: '#ff7f0e', baseline: '#2ca02c' };

/** Two bar panels, one row per scenario: throughput at saturation and server CPU per check. */
function svgChart(report) {
  const rows = report.rows;
  const labelW = 330;
  const panelW = 300;
  const gap = 40;
  const rowH = 22;
  const top = 56;
  const height = top + rows.length * rowH + 40;
  const width = labelW + 2 * panelW + gap + 30;
  const maxRps = Math.max(...rows.map((r) => r.rps).filter(Number.isFinite), 1);
  // One outlier (the login callback) would flatten every other CPU bar: the axis stops short of it and its bar is cut.
  const cpuValues = rows.map((r) => r.cpuUs).filter(Number.isFinite).sort((a, b) => b - a);
  const maxCpu = cpuValues.length > 1 && cpuValues[0] > 2 * cpuValues[1] ? cpuValues[1] * 1.25 : Math.max(cpuValues[0] ?? 1, 1);
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="100%" height="100%" fill="#fff"/>`);
  out.push(`<text x="10" y="20" font-size="14" font-weight="bold">${esc(`oidc-ext-authz benchmark ${report.date.slice(0, 10)}${report.quick ? ' (quick)' : ''}: medians of ${report.options.rounds} rounds, ${report.machine.cpus} cores shared with the load generators`)}</text>`);
  const x1 = labelW;
  const x2 = labelW + panelW + gap;
  out.push(`<text x="${x1}" y="${top - 10}" font-weight="bold">checks/s at saturation (higher is better)</text>`);
  out.push(`<text x="${x2}" y="${top - 10}" font-weight="bold">server CPU µs per check (lower is better)</text>`);
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const color = COLORS[r.group] ?? '#333';
    out.push(`<text x="${labelW - 8}" y="${y + 15}" text-anchor="end">${esc(r.title.length > 52 ? `${r.title.slice(0, 50)}…` : r.title)}</text>`);
    const w1 = Number.isFinite(r.rps) ? (r.rps / maxRps) * (panelW - 60) : 0;
    const w2 = Number.isFinite(r.cpuUs) ? (Math.min(r.cpuUs, maxCpu) / maxCpu) * (panelW - 60) : 0;
    const cut = r.cpuUs > maxCpu ? ' (bar cut)' : '';
    out.push(`<rect x="${x1}" y="${y + 4}" width="${w1.toFixed(1)}" height="${rowH - 8}" fill="${color}"/>`);
    out.push(`<text x="${(x1 + w1 + 4).toFixed(1)}" y="${y + 15}">${fmt(r.rps)}</text>`);
    out.push(`<rect x="${x2}" y="${y + 4}" width="${w2.toFixed(1)}" height="${rowH - 8}" fill="${color}"/>`);
    out.push(`<text x="${(x2 + w2 + 4).toFixed(1)}" y="${y + 15}">${fmt(r.cpuUs)}${cut}</text>`);
  });
  const ly = top + rows.length * rowH + 20;
  let lx = 10;
  const legend = [['ceiling', 'no-op ceiling'], ['ours', 'oidc-ext-authz'], ['workers', 'oidc-ext-authz, cluster workers'], ['peer', 'peers (oauth2-proxy, OPA-Envoy)'], ['baseline', 'baseline build (--baseline)']];
  for (const [group, label] of legend.filter(([g]) => g !== 'baseline' || rows.some((r) => r.group === 'baseline'))) {
    out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${COLORS[group]}"/><text x="${lx + 16}" y="${ly}">${label}</text>`);
    lx += 40 + label.length * 6.5;
  }
  out.push('</svg>');
  return out.join('\n');
}

/** Writes latest.json, latest.md and latest.svg into `dir`; returns the markdown. */
export function writeReport(dir, input) {
  const { rows, comparisons } = summarize(input);
  const report = {
    date: input.date,
    quick: input.quick,
    options: input.options,
    machine: input.machine,
    versions: input.versions,
    rows,
    comparisons,
    targets: targets(rows, comparisons, input.memory),
    rss: input.rss,
    memory: input.memory,
    durationSeconds: Math.round(input.seconds),
    runs: input.runs,
  };
  const md = markdown(report);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(join(dir, 'latest.md'), `${md}\n`);
  writeFileSync(join(dir, 'latest.svg'), `${svgChart(report)}\n`);
  return md;
}
