import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_USER, startDemo, type Demo } from '../src/demo.js';
import { CHROMIUM, hasChromium } from './support/tools.js';

// The README's main command, driven the way a newcomer would: Chromium opens the printed URL, signs in with the
// printed credentials on the IdP's own page, reads the identity the app received, and logs out.
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'];
const available = hasChromium();
const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

let demo: Demo;
let banner = '';
let browser: Browser;

beforeAll(async () => {
  demo = await startDemo({ gatewayPort: 0, idpPort: 0, logLevel: 'silent', print: (t) => (banner += t) });
  if (available) browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
});

afterAll(async () => {
  await browser?.close();
  await demo?.close();
});

describe('npm run demo', () => {
  it('prints the URL to open and the demo credentials', () => {
    expect(banner).toContain(`Open ${demo.url} and sign in as  ${DEMO_USER.username} / ${DEMO_USER.password}`);
    expect(demo.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
  });

  it.skipIf(!available)('logs in on the IdP page in Chromium, shows kubeflow-userid and groups, and logs out at the IdP', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(demo.url);
    expect(new URL(page.url()).origin).toBe(demo.issuer); // redirected to the IdP's own login page
    await page.getByLabel('Username').fill(DEMO_USER.username);
    await page.getByLabel('Password').fill(DEMO_USER.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(demo.url);
    await expect(page.locator('h1').textContent()).resolves.toBe(`Signed in as ${DEMO_USER.email}`);
    const cell = (name: string) => page.locator('tr', { has: page.locator('th', { hasText: new RegExp(`^${name}$`) }) }).locator('td').textContent();
    await expect(cell('kubeflow-userid')).resolves.toBe(DEMO_USER.email);
    await expect(cell('kubeflow-groups')).resolves.toBe(DEMO_USER.groups.join(','));
    await expect(cell('x-auth-request-email')).resolves.toBe(DEMO_USER.email);
    // The session cookie is the browser's own: HttpOnly and SameSite=Lax, so page scripts cannot read it.
    const cookies = await context.cookies(demo.url);
    const isSession = (name: string) => /^oidc_session(_\d+)?$/.test(name); // not the `_login_` state cookies
    const session = cookies.filter((c) => isSession(c.name));
    expect(session.length).toBeGreaterThan(0);
    expect(session.every((c) => c.httpOnly && c.sameSite === 'Lax')).toBe(true);

    await page.getByRole('link', { name: 'Log out' }).click();
    // The IdP ends its own session and sends the browser back; the app asks to sign in again.
    await page.getByLabel('Username').waitFor({ timeout: 10_000 });
    expect(new URL(page.url()).origin).toBe(demo.issuer);
    expect((await context.cookies(demo.url)).filter((c) => isSession(c.name))).toEqual([]);
    await context.close();
  });

  it('runs from the built CLI, prints the banner, answers a browser with a login redirect, and stops on SIGTERM', async () => {
    const child = spawn(process.execPath, [CLI, 'demo'], {
      env: { ...process.env, DEMO_PORT: '0', DEMO_IDP_PORT: '0', LOG_LEVEL: 'silent' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const deadline = Date.now() + 20_000;
      while (!/Ctrl-C stops everything/.test(out)) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`demo did not start: ${out}${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const url = /app behind the gateway\s+(\S+)/.exec(out)![1]!;
      // node:http, not fetch(): fetch always sends `sec-fetch-mode: cors`, which is (rightly) answered with a 401.
      const reply = await new Promise<{ status: number; location: string | undefined }>((resolve, reject) => {
        request(url, { headers: { accept: 'text/html', 'sec-fetch-mode': 'navigate' } }, (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, location: res.headers.location });
        })
          .once('error', reject)
          .end();
      });
      expect(reply.status).toBe(302);
      expect(reply.location).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/auth\?/);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });
});
