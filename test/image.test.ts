/**
 * The container image without a container engine: the runtime stage of the Dockerfile is parsed and replayed in an
 * empty directory (its COPY lines and its `npm ci` line, verbatim), then the server is started from there the way
 * the image's ENTRYPOINT/CMD/ENV start it. Because the steps come from the Dockerfile, the file and this test cannot
 * drift apart: a dependency missing from production deps, a directory not copied, or a dev tool needed at run time
 * fails here.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..');

// ---- a small Dockerfile reader -------------------------------------------------------------------------------------

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  image: string;
  name: string | undefined;
  instructions: Instruction[];
}

/** Instructions grouped by stage; continuation lines joined, comments dropped, global ARG defaults substituted in FROM. */
function parseDockerfile(text: string): Stage[] {
  const lines: string[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    // Docker drops comment lines, also in the middle of a continued instruction.
    if (/^\s*#/.test(raw)) continue;
    const line = raw.replace(/\s+$/, '');
    if (line.endsWith('\\')) {
      pending += line.slice(0, -1) + ' ';
      continue;
    }
    const full = (pending + line).trim();
    pending = '';
    if (full) lines.push(full);
  }
  const globalArgs = new Map<string, string>();
  const stages: Stage[] = [];
  for (const line of lines) {
    const m = /^(\w+)\s*(.*)$/.exec(line)!;
    const op = m[1]!.toUpperCase();
    const args = m[2]!;
    if (op === 'ARG' && stages.length === 0) {
      const [name, value] = args.split('=', 2) as [string, string | undefined];
      globalArgs.set(name.trim(), (value ?? '').trim());
      continue;
    }
    if (op === 'FROM') {
      const [image, as, name] = args.split(/\s+/);
      const resolved = image!.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string | undefined, b: string | undefined) => globalArgs.get((a ?? b)!) ?? '');
      stages.push({ image: resolved, name: as?.toUpperCase() === 'AS' ? name : undefined, instructions: [] });
      continue;
    }
    if (stages.length === 0) throw new Error(`Dockerfile: ${op} before FROM`);
    stages.at(-1)!.instructions.push({ op, args });
  }
  return stages;
}

/** `KEY=value KEY2="v"` pairs of an ENV instruction. */
function envPairs(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of args.matchAll(/(\w+)=("([^"]*)"|\S*)/g)) out[m[1]!] = m[3] ?? m[2]!;
  return out;
}

/** The argv of each `npm ci` in a RUN line (`a && npm ci ... && b`); other commands are not replayed. */
function npmCiCommands(run: string): string[][] {
  return run
    .split('&&')
    .map((part) => part.trim().split(/\s+/))
    .filter((argv) => argv[0] === 'npm' && argv[1] === 'ci');
}

const dockerfile = parseDockerfile(readFileSync(join(root, 'Dockerfile'), 'utf8'));
const build = dockerfile.find((s) => s.name === 'build');
const runtime = dockerfile.at(-1)!;
const of = (stage: Stage, op: string) => stage.instructions.filter((i) => i.op === op);
const workdir = (stage: Stage) => of(stage, 'WORKDIR').at(-1)?.args ?? '/';
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

describe('Dockerfile', () => {
  it('has a build stage and a runtime stage on the same Node LTS slim base', () => {
    expect(build).toBeDefined();
    expect(dockerfile.length).toBeGreaterThanOrEqual(2);
    expect(runtime.image).toBe(build!.image);
    const m = /^node:(\d+)-bookworm-slim$/.exec(runtime.image);
    expect(m, runtime.image).not.toBeNull();
    const major = Number(m![1]);
    expect(major % 2, 'an LTS (even) Node line').toBe(0);
    expect(major).toBeGreaterThanOrEqual(24);
    expect(of(build!, 'RUN').map((r) => r.args)).toEqual(expect.arrayContaining(['npm ci --no-audit --no-fund', 'npm run build']));
  });

  it('runs as a numeric non-root user, after every RUN, with the documented entrypoint, ports and env', () => {
    const users = of(runtime, 'USER');
    expect(users.map((u) => u.args)).toEqual(['65532:65532']);
    const userIndex = runtime.instructions.indexOf(users[0]!);
    const lastRun = runtime.instructions.findLastIndex((i) => i.op === 'RUN');
    expect(userIndex).toBeGreaterThan(lastRun);
    expect(of(runtime, 'EXPOSE').flatMap((e) => e.args.split(/\s+/)).sort()).toEqual(['9000', '9090']);
    expect(JSON.parse(of(runtime, 'ENTRYPOINT')[0]!.args)).toEqual(['node', 'dist/cli.js']);
    expect(JSON.parse(of(runtime, 'CMD')[0]!.args)).toEqual(['serve']);
    const env = Object.assign({}, ...of(runtime, 'ENV').map((e) => envPairs(e.args))) as Record<string, string>;
    expect(env).toEqual({ NODE_ENV: 'production', OIDC_EXT_AUTHZ_CONFIG: '/etc/oidc-ext-authz/config.yaml' });
  });

  it('installs production dependencies only, without lifecycle scripts, and bakes in no secrets', () => {
    const ci = of(runtime, 'RUN').flatMap((r) => npmCiCommands(r.args));
    expect(ci).toHaveLength(1);
    expect(ci[0]).toEqual(expect.arrayContaining(['--omit=dev', '--ignore-scripts']));
    for (const stage of dockerfile) {
      for (const i of stage.instructions.filter((x) => x.op === 'ENV' || x.op === 'ARG')) {
        expect(i.args, `${i.op} ${i.args}`).not.toMatch(/(SECRET|PASSWORD|TOKEN|COOKIE_KEY|PRIVATE)/i);
      }
      for (const c of stage.instructions.filter((x) => x.op === 'COPY' || x.op === 'ADD')) {
        expect(c.args, 'no config or secret files in the image').not.toMatch(/\.env|secret|\.pem|\.key\b|config\.ya?ml/i);
      }
    }
    expect(of(runtime, 'ADD')).toEqual([]);
  });

  it('.dockerignore keeps the context small and free of local state, but keeps what the build copies', () => {
    const ignore = readFileSync(join(root, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    for (const p of ['**/node_modules', '.git', '.cache', 'dist', '.env']) expect(ignore).toContain(p);
    const copied = dockerfile
      .flatMap((s) => of(s, 'COPY'))
      .filter((c) => !c.args.startsWith('--from'))
      .flatMap((c) => c.args.split(/\s+/).slice(0, -1));
    for (const src of copied) {
      expect(ignore.filter((p) => !p.startsWith('!')), `${src} is copied but ignored`).not.toContain(src);
      expect(ignore.filter((p) => !p.startsWith('!')), `${src} is copied but ignored`).not.toContain(`${src}/`);
    }
  });
});

// ---- replay the runtime stage and run the server from it -----------------------------------------------------------

interface Replayed {
  dir: string;
  env: Record<string, string>;
}

/** COPY and `npm ci` of the runtime stage, in order, with the build stage's WORKDIR mapped to this checkout. */
function replayRuntimeStage(dir: string): Replayed {
  const env: Record<string, string> = {};
  const buildDir = build ? workdir(build) : '/';
  const fromBuild = (src: string) => join(root, posix.relative(buildDir, posix.resolve(buildDir, src)));
  let cwd = '/';
  /** A path of the image's filesystem, under `dir`. */
  const here = (p: string) => join(dir, posix.resolve(cwd, p));
  for (const { op, args } of runtime.instructions) {
    if (op === 'WORKDIR') {
      cwd = posix.resolve(cwd, args);
      mkdirSync(here('.'), { recursive: true });
    } else if (op === 'ENV') {
      Object.assign(env, envPairs(args));
    } else if (op === 'COPY') {
      const words = args.split(/\s+/);
      const from = words[0]!.startsWith('--from=') ? words.shift()!.slice('--from='.length) : undefined;
      expect(words.every((w) => !w.startsWith('--')), `COPY flags other than --from are not replayed: ${args}`).toBe(true);
      const dest = words.pop()!;
      for (const src of words) {
        if (from !== undefined) expect(from, 'COPY --from names the build stage').toBe('build');
        const source = from === undefined ? join(root, src) : fromBuild(src);
        expect(existsSync(source), `COPY source ${source}`).toBe(true);
        const target = dest.endsWith('/') || words.length > 1 ? join(here(dest), src.split('/').pop()!) : here(dest);
        mkdirSync(dirname(target), { recursive: true });
        cpSync(source, target, { recursive: true });
      }
    } else if (op === 'RUN') {
      for (const argv of npmCiCommands(args)) {
        const r = spawnSync(argv[0]!, argv.slice(1), { cwd: here('.'), encoding: 'utf8', timeout: 8 * 60_000, env: { ...process.env, ...env } });
        if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status ?? r.error}):\n${r.stderr}`);
      }
    }
  }
  return { dir: here('.'), env };
}

/** Every file under dir (but node_modules) with its size and mtime: the process must not write anything. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.name === 'node_modules' && d === dir) {
        out.push(`node_modules/ ${statSync(p).mtimeMs}`);
        continue;
      }
      if (e.isDirectory()) walk(p);
      else out.push(`${relative(dir, p)} ${statSync(p).size} ${statSync(p).mtimeMs}`);
    }
  };
  walk(dir);
  return out.sort();
}

describe('the image runtime stage, replayed', { timeout: 10 * 60_000 }, () => {
  let tmp: string;
  let app: Replayed;
  let server: ChildProcess | undefined;
  let stdout = '';
  let stderr = '';

  beforeAll(() => {
    if (!existsSync(join(root, 'dist/cli.js'))) {
      const r = spawnSync('npm', ['run', 'build'], { cwd: root, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`dist/ is missing and npm run build failed:\n${r.stdout}${r.stderr}`);
    }
    tmp = mkdtempSync(join(tmpdir(), 'oidc-ext-authz-image-'));
    app = replayRuntimeStage(join(tmp, 'root'));
  }, 10 * 60_000);

  afterAll(() => {
    server?.kill('SIGKILL');
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('has every production dependency and no development dependency', () => {
    // The lockfile marks dev-only packages (`dev: true`); a devDependency that a runtime package also needs
    // (e.g. @types/node under protobufjs) is not dev-only and ships.
    const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean; devOptional?: boolean; optional?: boolean }>;
    };
    const entries = Object.entries(lock.packages).filter(([path]) => path.startsWith('node_modules/'));
    const devOnly = entries.filter(([, e]) => e.dev).map(([path]) => path);
    const runtimeOnly = entries.filter(([, e]) => !e.dev && !e.devOptional && !e.optional).map(([path]) => path);
    expect(devOnly.length).toBeGreaterThan(0);
    for (const path of devOnly) expect(existsSync(join(app.dir, path)), `${path} is dev-only`).toBe(false);
    for (const path of runtimeOnly) expect(existsSync(join(app.dir, path, 'package.json')), path).toBe(true);
    for (const name of Object.keys(pkg.dependencies)) expect(existsSync(join(app.dir, 'node_modules', name, 'package.json')), name).toBe(true);
    for (const name of Object.keys(pkg.devDependencies)) {
      if (lock.packages[`node_modules/${name}`]?.dev) expect(existsSync(join(app.dir, 'node_modules', name)), name).toBe(false);
    }
    const probe = (spec: string) =>
      spawnSync(process.execPath, ['--input-type=module', '-e', `import.meta.resolve(${JSON.stringify(spec)})`], { cwd: app.dir, encoding: 'utf8' });
    expect(probe('vitest').status, 'vitest must not resolve from the image').not.toBe(0);
    expect(probe('typescript').status, 'typescript must not resolve from the image').not.toBe(0);
    expect(probe('yaml').status, probe('yaml').stderr).toBe(0);
    expect(existsSync(join(app.dir, 'src')), 'sources are not shipped').toBe(false);
    expect(existsSync(join(app.dir, 'proto/envoy/service/auth/v3/external_auth.proto'))).toBe(true);
  });

  it('serves /healthz as the image starts it, as uid 65532 with nothing writable, and exits 0 on SIGTERM', async () => {
    // The config a Kubernetes ConfigMap would mount; ports 0 so the test never collides.
    const etc = join(tmp, 'etc');
    mkdirSync(etc);
    const configFile = join(etc, 'config.yaml');
    writeFileSync(
      configFile,
      'server:\n  grpc: { host: 127.0.0.1, port: 0 }\n  admin: { host: 127.0.0.1, port: 0 }\n  shutdownGraceSeconds: 2\nlog: { level: info }\n',
    );
    // As root (CI), run like the image: uid/gid 65532, which owns nothing, so any write to the app dir fails.
    const asRoot = process.getuid?.() === 0;
    if (asRoot) for (const p of [tmp, etc, configFile]) chmodSync(p, statSync(p).isDirectory() ? 0o755 : 0o644);
    const before = snapshot(app.dir);

    const entrypoint = JSON.parse(of(runtime, 'ENTRYPOINT')[0]!.args) as string[];
    const cmd = JSON.parse(of(runtime, 'CMD')[0]!.args) as string[];
    expect(entrypoint[0]).toBe('node');
    server = spawn(process.execPath, [...entrypoint.slice(1), ...cmd], {
      cwd: app.dir,
      // Only what the image has: its ENV (config path pointed at the mounted file), PATH, and a HOME nobody owns.
      env: { ...app.env, OIDC_EXT_AUTHZ_CONFIG: configFile, PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/nonexistent' },
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(asRoot ? { uid: 65532, gid: 65532 } : {}),
    });
    const exited = new Promise<number | null>((resolve) => server!.once('exit', (code) => resolve(code)));
    server.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    const listening = await new Promise<{ grpcPort: number; adminPort: number }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "listening" log line in 30 s\nstdout: ${stdout}\nstderr: ${stderr}`)), 30_000);
      server!.once('exit', (code) => reject(new Error(`server exited (${code}) before listening\nstdout: ${stdout}\nstderr: ${stderr}`)));
      server!.stdout!.on('data', (b: Buffer) => {
        stdout += b.toString();
        for (const line of stdout.split('\n')) {
          if (!line.startsWith('{')) continue;
          const entry = JSON.parse(line) as { msg?: string; grpcPort?: number; adminPort?: number };
          if (entry.msg === 'listening') {
            clearTimeout(timer);
            resolve({ grpcPort: entry.grpcPort!, adminPort: entry.adminPort! });
          }
        }
      });
    });
    expect(listening.grpcPort).toBeGreaterThan(0);

    const health = await fetch(`http://127.0.0.1:${listening.adminPort}/healthz`);
    expect(health.status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${listening.adminPort}/metrics`)).status).toBe(200);

    server.kill('SIGTERM');
    expect(await exited).toBe(0);
    server = undefined;
    expect(snapshot(app.dir), 'the server wrote into its own directory (breaks readOnlyRootFilesystem)').toEqual(before);
  });
});
