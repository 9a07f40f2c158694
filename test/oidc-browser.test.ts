import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from './support/polling.js';
import { startStack, type Stack } from './support/stack.js';

// A real Chromium: its own cookie rules (SameSite, paths, Max-Age), Fetch Metadata headers and redirects.
// Plain http, so the session cookie is not Secure here (Chromium refuses Secure cookies from http origins).
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const available = existsSync(CHROMIUM);
let stack: Stack;
let browser: Browser;

beforeAll(async () => {
  if (!available) return;
  stack = await startStack({ session: { secure: false } });
  await until(() => stack.apps[0]!.ready());
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [`--host-resolver-rules=MAP app.example.test 127.0.0.1`, '--no-sandbox'],
  });
});

afterAll(async () => {
  await browser?.close();
  await stack?.close();
});

describe.skipIf(!available)('in a real browser', () => {
  it('logs in on the IdP form, lands on the original URL, and fetch() keeps working with the session', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${stack.base}/notebooks/?ns=alice`);
    await page.getByLabel('Username').fill('alice');
    await page.getByLabel('Password').fill('alice-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${stack.base}/notebooks/?ns=alice`);
    await expect(page.locator('h1').textContent()).resolves.toBe('Signed in as oidc:alice@example.com');

    const status = await page.evaluate(async () => (await fetch('/api/data', { headers: { accept: 'application/json' } })).status);
    expect(status).toBe(200);
    await context.close();
  });

  it('answers fetch() and websockets with 401 after the session ended, never a redirect to the IdP', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${stack.base}/lab`);
    await page.getByLabel('Username').fill('alice');
    await page.getByLabel('Password').fill('alice-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${stack.base}/lab`);
    stack.skew = 1000; // idle timeout passed while the tab stayed open
    try {
      const result = await page.evaluate(async () => {
        const r = await fetch('/lab/api/kernels');
        return { status: r.status, redirected: r.redirected, auth: r.headers.get('www-authenticate') };
      });
      expect(result).toEqual({ status: 401, redirected: false, auth: 'Bearer' });
      const ws = await page.evaluate(
        (url) =>
          new Promise<string>((resolve) => {
            const socket = new WebSocket(url);
            socket.onopen = () => resolve('open');
            socket.onerror = () => resolve('error');
          }),
        `${stack.base.replace('http', 'ws')}/lab/api/kernels/1/channels`,
      );
      expect(ws).toBe('error');
      // The tab reloads: a navigation goes to the IdP (whose session is still alive) and comes straight back.
      await page.reload();
      await page.waitForURL(`${stack.base}/lab`);
      await expect(page.locator('h1').textContent()).resolves.toBe('Signed in as oidc:alice@example.com');
    } finally {
      stack.skew = 0;
    }
    await context.close();
  });

  it('completes two logins started in two tabs before either signed in', async () => {
    const context = await browser.newContext();
    const [one, two] = [await context.newPage(), await context.newPage()];
    await one.goto(`${stack.base}/tab-one`);
    await two.goto(`${stack.base}/tab-two?x=1`);
    for (const page of [one, two]) {
      await page.getByLabel('Username').fill('alice');
      await page.getByLabel('Password').fill('alice-password');
      await page.getByRole('button', { name: 'Sign in' }).click();
    }
    await one.waitForURL(`${stack.base}/tab-one`);
    await two.waitForURL(`${stack.base}/tab-two?x=1`);
    const names = (await context.cookies()).map((c) => c.name).filter((n) => n.startsWith('oidc_session'));
    expect(names).toEqual(['oidc_session']);
    await context.close();
  });

  it('logs out at the IdP too: the next visit shows the login form again', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${stack.base}/`);
    await page.getByLabel('Username').fill('alice');
    await page.getByLabel('Password').fill('alice-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${stack.base}/`);
    await page.getByRole('link', { name: 'Log out' }).click();
    // post_logout_redirect_uri (/signed-out) is protected, so the browser ends on the IdP's login form.
    await page.getByLabel('Username').waitFor();
    expect(new URL(page.url()).origin).toBe(stack.issuer);
    expect((await context.cookies()).some((c) => c.name === 'oidc_session')).toBe(false);
    await context.close();
  });
});
