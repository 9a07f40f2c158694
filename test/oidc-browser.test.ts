import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENVOY_VERSIONS } from '../src/emulator/gateway.js';
import { until } from './support/polling.js';
import { startStack, type Stack } from './support/stack.js';
import { makeTestCa } from './support/test-ca.js';
import { CHROMIUM, hasChromium } from './support/tools.js';

// A real Chromium over https (HTTP/2 through the gateway's TLS listener): its own cookie rules (Secure, __Host-,
// SameSite, paths, Max-Age), Fetch Metadata headers and redirects. It trusts the test CA's certificate by its public
// key and nothing else. When tools are required (CI, npm test) a missing Chromium fails the file instead of skipping it.
const available = hasChromium();
const SESSION = '__Host-oidc_session';


describe.skipIf(!available).each(ENVOY_VERSIONS)('in a real browser over https, Envoy %s', (envoyVersion) => {
  let stack: Stack;
  let browser: Browser;

  beforeAll(async () => {
    const ca = makeTestCa(['app.example.test']);
    stack = await startStack({ tls: ca, envoyVersion });
    await until(() => stack.apps[0]!.ready());
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--host-resolver-rules=MAP app.example.test 127.0.0.1, MAP attacker.test 127.0.0.1', `--ignore-certificate-errors-spki-list=${ca.spki}`, '--no-sandbox'],
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

  it('logs in on the IdP form, lands on the original URL, and fetch() keeps working with the session', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const authorize = page.waitForRequest((r) => r.url().startsWith(stack.issuer) && r.url().includes('redirect_uri='));
    await page.goto(`${stack.base}/notebooks/?ns=alice`);
    expect(new URL((await authorize).url()).searchParams.get('redirect_uri')).toBe(`${stack.base}/oauth2/callback`);
    await page.getByLabel('Username').fill('alice');
    await page.getByLabel('Password').fill('alice-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${stack.base}/notebooks/?ns=alice`);
    await expect(page.locator('h1').textContent()).resolves.toBe('Signed in as oidc:alice@example.com');
    expect(stack.base).toMatch(/^https:\/\/app\.example\.test:\d+$/);
    // Runs in the page: the Navigation Timing entry says which protocol carried the document.
    const protocol = await page.evaluate(() => (performance as unknown as { getEntriesByType(t: string): Array<{ nextHopProtocol: string }> }).getEntriesByType('navigation')[0]?.nextHopProtocol);
    expect(protocol).toBe('h2');
    const session = (await context.cookies()).find((c) => c.name === SESSION);
    expect(session).toMatchObject({ secure: true, httpOnly: true, sameSite: 'Lax', path: '/' });

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
    const names = (await context.cookies()).map((c) => c.name).filter((n) => n.startsWith(SESSION));
    expect(names).toEqual([SESSION]);
    await context.close();
  });

  it('logs out at the IdP too: the next visit shows the login form again', async () => {
    const { context, page } = await signedIn();
    await page.getByRole('link', { name: 'Log out' }).click();
    // post_logout_redirect_uri (/signed-out) is protected, so the browser ends on the IdP's login form.
    await page.getByLabel('Username').waitFor();
    expect(new URL(page.url()).origin).toBe(stack.issuer);
    expect((await context.cookies()).some((c) => c.name === SESSION)).toBe(false);
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

    const hasSession = async (context: BrowserContext) => (await context.cookies()).some((c) => c.name === SESSION);

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
