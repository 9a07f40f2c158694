import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EchoedRequest } from '../../src/emulator/echo-upstream.js';
import { NAVIGATE, TestBrowser, loginAt } from './browser.js';
import { defineGatewayAttacks } from './gateway-attacks.js';
import { GATEWAY_HOST, SESSION, SPOOFED, identityAtApp, receivedValues, startGatewayStack, type GatewayGap, type GatewayStack, type GatewayTarget } from './gateway-stack.js';
import { CHROMIUM, hasChromium, toolMissing } from './tools.js';

/**
 * One suite, run behind every real proxy (test/gateway-nginx.test.ts, test/gateway-caddy.test.ts), the way
 * interop-suite.ts runs one suite against every IdP: the product's HTTP authorization listener behind the proxy,
 * configured from `render`'s snippet as it is, the echo upstream as the app, the in-process IdP, and Chromium.
 */

const TIMEOUT = 120_000;

export function defineGatewaySuite(target: GatewayTarget): void {
  const available = (target.binary !== undefined || toolMissing(target.missing)) && hasChromium();

  describe.skipIf(!available)(`behind a real ${target.name}`, () => {
    let g: GatewayStack;
    let browser: Browser;

    beforeAll(async () => {
      g = await startGatewayStack(target, target.binary!);
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', `--host-resolver-rules=MAP ${GATEWAY_HOST} 127.0.0.1`],
      });
    }, TIMEOUT);

    afterAll(async () => {
      await browser?.close();
      await g?.close();
    }, 60_000);

    // A failure shows what the proxy said (its error log, access log and config).
    afterEach((ctx) => {
      if (ctx.task.result?.state === 'fail' && g !== undefined) console.error(`--- ${target.name} logs\n${g.proxy.logs()}`);
    });

    /**
     * `it`, or `it.fails` while the target has this known gap (a renderer fix not merged yet, named in the title):
     * green while the gap is there, red the day it is fixed, so the marker cannot outlive the bug.
     */
    function itUnlessGap(gap: GatewayGap, title: string, fn: () => Promise<void>): void {
      const why = target.knownGaps?.[gap];
      if (why === undefined) it(title, fn, TIMEOUT);
      else it.fails(`${title} [known gap: ${why}]`, fn, TIMEOUT);
    }

    async function newPage(extraHTTPHeaders?: Record<string, string>): Promise<{ context: BrowserContext; page: Page }> {
      const context = await browser.newContext(extraHTTPHeaders ? { extraHTTPHeaders } : {});
      context.setDefaultTimeout(30_000);
      return { context, page: await context.newPage() };
    }

    async function signInOnForm(page: Page): Promise<void> {
      await page.getByLabel('Username').fill('alice');
      await page.getByLabel('Password').fill('alice-password');
      await page.getByRole('button', { name: 'Sign in' }).click();
    }

    /** What the app received for a same-origin fetch from the page (the echo's JSON). */
    const seenByApp = (page: Page, path: string) =>
      page.evaluate(async (p) => {
        const r = await fetch(p, { headers: { accept: 'application/json' } });
        return { status: r.status, body: (await r.json()) as EchoedRequest };
      }, path);

    it(
      'signs in on the IdP form through the proxy and the app gets the same identity headers as behind the gRPC gateway, never the spoofed ones',
      async () => {
        // Chromium adds the spoofed headers to every request, the navigations and the fetches alike.
        const { context, page } = await newPage({ ...SPOOFED });
        const target = `${g.base}/notebooks/?ns=alice`;
        const first = page.waitForResponse((r) => r.url() === target);
        const authorize = page.waitForRequest((r) => r.url().startsWith(g.stack.issuer) && r.url().includes('redirect_uri='));
        await page.goto(target);
        const redirect = await first;
        expect(redirect.status()).toBe(302);
        // The login-state cookie rides on the redirect to the IdP.
        expect((await redirect.headerValues('set-cookie')).some((l) => l.startsWith(`${SESSION}_login_`))).toBe(true);
        // redirect_uri names the proxy's origin: neither the spoofed X-Forwarded-Host/Proto nor X-Original-URL moved it.
        expect(new URL((await authorize).url()).searchParams.get('redirect_uri')).toBe(`${g.base}/oauth2/callback`);

        await signInOnForm(page);
        await page.waitForURL(target);
        await expect(page.locator('h1').textContent()).resolves.toBe('Signed in as oidc:alice@example.com');
        const session = (await context.cookies()).find((c) => c.name === SESSION);
        expect(session).toMatchObject({ httpOnly: true, sameSite: 'Lax', path: '/' });

        const { status, body } = await seenByApp(page, '/notebooks/api/whoami');
        expect(status).toBe(200);
        // The identity is ours whatever the client sent (the forwarded headers at the app: gateway-attacks.ts).
        expect(receivedValues(body).join('\n')).not.toMatch(/mallory/);
        expect(body.headers['kubeflow-userid']).toBe('oidc:alice@example.com');
        expect(body.headers['x-auth-request-email']).toBe('alice@example.com');

        // The same session cookie through the gRPC gateway emulator: one engine, the same identity at the app.
        const tb = new TestBrowser();
        tb.setCookie(GATEWAY_HOST, SESSION, session!.value);
        const viaGrpc = await tb.request(`${g.grpcBase}/notebooks/api/whoami`, { headers: { accept: 'application/json' } });
        expect(viaGrpc.status).toBe(200);
        expect(identityAtApp(body)).toEqual(identityAtApp(JSON.parse(viaGrpc.body) as EchoedRequest));
        await context.close();
      },
      TIMEOUT,
    );

    it(
      'answers fetch() and XHR without a session with 401 and no redirect, and a navigation with 302 to the IdP',
      async () => {
        const { context, page } = await newPage();
        await page.goto(`${g.base}/public/start`);
        const results = await page.evaluate(async () => {
          const xhr = (headers: Record<string, string>) =>
            new Promise<number>((resolve) => {
              // No DOM lib in this tsconfig: the page's XMLHttpRequest, typed by the little used here.
              type Xhr = { open(m: string, u: string): void; setRequestHeader(k: string, v: string): void; send(): void; status: number; onload: () => void; onerror: () => void };
              const r = new (globalThis as unknown as { XMLHttpRequest: new () => Xhr }).XMLHttpRequest();
              r.open('GET', '/notebooks/api/list');
              for (const [k, v] of Object.entries(headers)) r.setRequestHeader(k, v);
              r.onload = () => resolve(r.status);
              r.onerror = () => resolve(-1);
              r.send();
            });
          const f = await fetch('/notebooks/api/list', { redirect: 'manual' });
          const json = await fetch('/notebooks/', { headers: { accept: 'application/json' } });
          return {
            fetch: { status: f.status, type: f.type },
            json: { status: json.status, redirected: json.redirected },
            xhr: await xhr({ 'X-Requested-With': 'XMLHttpRequest' }),
            xhrJson: await xhr({ Accept: 'application/json' }),
          };
        });
        // A manual-redirect fetch would show type "opaqueredirect" (status 0) for a 302.
        expect(results).toEqual({ fetch: { status: 401, type: 'basic' }, json: { status: 401, redirected: false }, xhr: 401, xhrJson: 401 });

        const nav = page.waitForResponse((r) => r.url() === `${g.base}/notebooks/`);
        await page.goto(`${g.base}/notebooks/`);
        const answer = await nav;
        expect(answer.status()).toBe(302);
        expect((await answer.headerValue('location'))!.startsWith(`${g.stack.issuer}/`)).toBe(true);
        await page.getByLabel('Username').waitFor();
        await context.close();
      },
      TIMEOUT,
    );

    it(
      'logs out through the proxy: the session cookie is cleared, the IdP session ends, the next visit shows the login form',
      async () => {
        const { context, page } = await newPage();
        await page.goto(`${g.base}/`);
        await signInOnForm(page);
        await page.waitForURL(`${g.base}/`);
        expect((await context.cookies()).some((c) => c.name === SESSION)).toBe(true);
        const cleared = page.waitForResponse((r) => r.url() === `${g.base}/oauth2/sign_out`);
        await page.getByRole('link', { name: 'Log out' }).click();
        const logout = await cleared;
        expect(logout.status()).toBe(302);
        expect((await logout.headerValues('set-cookie')).some((l) => l.startsWith(`${SESSION}=`) && /Max-Age=0/i.test(l))).toBe(true);
        // post_logout_redirect_uri (/signed-out) is protected: with the IdP session gone the browser ends on its form.
        await page.getByLabel('Username').waitFor();
        expect(new URL(page.url()).origin).toBe(g.stack.issuer);
        expect((await context.cookies()).some((c) => c.name === SESSION)).toBe(false);
        await page.goto(`${g.base}/notebooks/`);
        await page.getByLabel('Username').waitFor();
        await context.close();
      },
      TIMEOUT,
    );

    itUnlessGap(
      'refreshed-cookie-dropped',
      'sets the session cookie on the callback and a refreshed one on an allowed response once the access token expires',
      async () => {
        const tb = new TestBrowser();
        const { start, callback } = await loginAt(tb, g.base, '/lab?x=1');
        expect(start.setCookies.some((l) => l.startsWith(`${SESSION}_login_`))).toBe(true);
        expect(callback.url.startsWith(`${g.base}/oauth2/callback?`)).toBe(true);
        expect(callback.status).toBe(302);
        expect(callback.location).toBe(`${g.base}/lab?x=1`);
        expect(callback.setCookies.some((l) => l.startsWith(`${SESSION}=`) && !/Max-Age=0/i.test(l))).toBe(true);
        const first = tb.jar(GATEWAY_HOST).get(SESSION);

        const refreshes = () => g.stack.idp!.tokenRequests.get('refresh_token') ?? 0;
        const before = refreshes();
        let refreshed: Awaited<ReturnType<TestBrowser['request']>> | undefined;
        // Due 4 s after login (see gateway-stack.ts): poll allowed requests until one carries it.
        const deadline = Date.now() + 30_000;
        while (refreshed === undefined && Date.now() < deadline) {
          const r = await tb.request(`${g.base}/lab/api/ping`, { headers: { accept: 'application/json' } });
          expect(r.status).toBe(200);
          if (r.setCookies.some((l) => l.startsWith(`${SESSION}=`))) refreshed = r;
          else await new Promise((resolve) => setTimeout(resolve, 250));
        }
        expect(refreshed, 'no refreshed Set-Cookie within 30 s').toBeDefined();
        expect(refreshes()).toBeGreaterThan(before);
        expect((JSON.parse(refreshed!.body) as EchoedRequest).headers['kubeflow-userid']).toBe('oidc:alice@example.com');
        const second = tb.jar(GATEWAY_HOST).get(SESSION);
        expect(second).toBeDefined();
        expect(second).not.toBe(first);
        // The refreshed cookie is a working session.
        const after = await tb.request(`${g.base}/lab`, { headers: { ...NAVIGATE } });
        expect(after.status).toBe(200);
      },
    );

    defineGatewayAttacks(() => g, itUnlessGap);
  });
}
