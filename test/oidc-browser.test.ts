import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, until, type Stack } from './support/idp.js';
import { CHROMIUM, hasChromium } from './support/tools.js';

// A real Chromium: its own cookie rules (SameSite, paths, Max-Age), Fetch Metadata headers and redirects.
// Plain http, so the session cookie is not Secure here (Chromium refuses Secure cookies from http origins).
const available = hasChromium();
let stack: Stack;
let browser: Browser;

beforeAll(async () => {
  if (!available) return;
  stack = await startStack({ session: { secure: false } });
  await until(() => stack.apps[0]!.ready());
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      `--host-resolver-rules=MAP app.example.test 127.0.0.1, MAP attacker.test 127.0.0.1`,
      // Chromium sends Fetch Metadata (Sec-Fetch-*) only to trustworthy origins: make the plain-http app one, as https is.
      `--unsafely-treat-insecure-origin-as-secure=${stack.base}`,
      '--no-sandbox',
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  await stack?.close();
});

/** A new browser context signed in as alice, on the app's home page. */
async function signedIn(): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${stack.base}/`);
  await page.getByLabel('Username').fill('alice');
  await page.getByLabel('Password').fill('alice-password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${stack.base}/`);
  return { context, page };
}

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
    const { context, page } = await signedIn();
    await page.getByRole('link', { name: 'Log out' }).click();
    // post_logout_redirect_uri (/signed-out) is protected, so the browser ends on the IdP's login form.
    await page.getByLabel('Username').waitFor();
    expect(new URL(page.url()).origin).toBe(stack.issuer);
    expect((await context.cookies()).some((c) => c.name === 'oidc_session')).toBe(false);
    await context.close();
  });

  describe('a logout another site triggers', () => {
    // Another site's pages (another registrable domain: example.test and attacker.test are different sites), each
    // aiming at our logout URL; the referrer is suppressed so only Origin and Fetch Metadata can tell.
    let evil: Server;
    let evilBase: string;
    beforeAll(async () => {
      evil = createServer((req, res) => {
        const logout = `${stack.base}/logout`;
        const pages: Record<string, string> = {
          '/link': `<a id="go" href="${logout}">Win a prize</a>`,
          '/auto-get': `<form id="f" method="get" action="${logout}"></form><script>document.getElementById('f').submit()</script>`,
          '/auto-post': `<form id="f" method="post" action="${logout}"></form><script>document.getElementById('f').submit()</script>`,
          '/image': `<img src="${logout}"><p id="done">loaded</p>`,
        };
        const body = pages[req.url ?? ''];
        if (body === undefined) return void res.writeHead(404).end();
        res.writeHead(200, { 'content-type': 'text/html' }).end(`<!doctype html><meta name="referrer" content="no-referrer">${body}`);
      });
      await new Promise<void>((resolve) => evil.listen(0, '127.0.0.1', resolve));
      evilBase = `http://attacker.test:${(evil.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      await new Promise<void>((resolve) => (evil ? evil.close(() => resolve()) : resolve()));
    });

    const hasSession = async (context: BrowserContext) => (await context.cookies()).some((c) => c.name === 'oidc_session');

    async function expectStillSignedIn(context: BrowserContext, page: Page): Promise<void> {
      expect(await hasSession(context)).toBe(true);
      await page.goto(`${stack.base}/`);
      await expect(page.locator('h1').textContent()).resolves.toBe('Signed in as oidc:alice@example.com');
      await context.close();
    }

    it.each(['/link', '/auto-get', '/auto-post'])('%s: lands on the confirmation page and the session lives on', async (path) => {
      const { context, page } = await signedIn();
      await page.goto(evilBase + path);
      if (path === '/link') await page.click('#go');
      // A GET form adds an empty query (`/logout?`).
      await page.waitForURL((url) => url.origin === stack.base && url.pathname === '/logout');
      await page.getByRole('button', { name: 'Sign out' }).waitFor();
      await expectStillSignedIn(context, page);
    });

    it('an image pointing at the logout URL ends nothing', async () => {
      const { context, page } = await signedIn();
      await page.goto(`${evilBase}/image`);
      await page.locator('#done').waitFor();
      await page.waitForLoadState('load');
      await expectStillSignedIn(context, page);
    });

    it('the confirmation button logs out, at the IdP too', async () => {
      const { context, page } = await signedIn();
      await page.goto(`${evilBase}/link`);
      await page.click('#go');
      await page.getByRole('button', { name: 'Sign out' }).click();
      await page.getByLabel('Username').waitFor();
      expect(new URL(page.url()).origin).toBe(stack.issuer);
      expect(await hasSession(context)).toBe(false);
      await context.close();
    });
  });
});
