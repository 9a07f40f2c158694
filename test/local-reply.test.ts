import { describe, expect, it } from 'vitest';
import { GRPC, grpcCodeFor, jsonReply, redirect, textReply, unauthorized, unavailable } from '../src/decision/local-reply.js';
import type { Decision, DenyResponse } from '../src/decision/types.js';

// The one local-reply builder every stage uses (ladder, login, callback, logout): status, google.rpc.Code, headers.

const deny = (d: Decision): DenyResponse => {
  if (Buffer.isBuffer(d.response) || d.response.kind !== 'deny') throw new Error('expected a local reply');
  return d.response;
};
const keys = (d: Decision) => deny(d).headers.map((h) => `${h.key}: ${h.value}`);

describe('local replies', () => {
  it('maps every status to a non-zero google.rpc.Code (0 would make Envoy allow)', () => {
    for (let status = 100; status <= 599; status++) expect(grpcCodeFor(status)).not.toBe(0);
    expect([200, 302, 401].map(grpcCodeFor)).toEqual([GRPC.UNAUTHENTICATED, GRPC.UNAUTHENTICATED, GRPC.UNAUTHENTICATED]);
    expect([400, 403, 404].map(grpcCodeFor)).toEqual([GRPC.PERMISSION_DENIED, GRPC.PERMISSION_DENIED, GRPC.PERMISSION_DENIED]);
    expect([500, 503].map(grpcCodeFor)).toEqual([GRPC.UNAVAILABLE, GRPC.UNAVAILABLE]);
  });

  it('builds text pages with content-type, the local-reply headers, extra headers, then one Set-Cookie entry per line', () => {
    const d = textReply(400, 'callback_invalid', 'Bad Request\n', {
      headers: [{ key: 'x-extra', value: '1', append: false }],
      setCookies: ['a=; Max-Age=0', 'b=; Max-Age=0'],
      detail: 'state missing',
    });
    expect(d).toMatchObject({ reason: 'callback_invalid', detail: 'state missing', response: { status: 400, grpcCode: GRPC.PERMISSION_DENIED, body: 'Bad Request\n' } });
    expect(keys(d)).toEqual(['content-type: text/plain; charset=utf-8', 'cache-control: no-store', 'x-content-type-options: nosniff', 'referrer-policy: no-referrer', 'x-extra: 1', 'set-cookie: a=; Max-Age=0', 'set-cookie: b=; Max-Age=0']);
    // Denied headers are replaced then all added by Envoy; append:true on them is lost in 1.31-1.36.
    expect(deny(d).headers.every((h) => h.append === false)).toBe(true);
    expect('detail' in textReply(403, 'forbidden_user', 'Forbidden\n')).toBe(false);
  });

  it('401s carry the Bearer challenge before any cookies; 503s a retry-after; both keep the detail', () => {
    expect(keys(unauthorized('login_required', undefined, { setCookies: ['s=; Max-Age=0'] }))).toEqual([
      'content-type: text/plain; charset=utf-8',
      'cache-control: no-store',
      'x-content-type-options: nosniff',
      'referrer-policy: no-referrer',
      'www-authenticate: Bearer',
      'set-cookie: s=; Max-Age=0',
    ]);
    expect(keys(unauthorized('bearer_expired', 'invalid_token'))).toContain('www-authenticate: Bearer error="invalid_token"');
    const down = unavailable('store_unavailable', 503, { detail: 'session store unavailable' });
    expect(down).toMatchObject({ detail: 'session store unavailable', response: { status: 503, grpcCode: GRPC.UNAVAILABLE, body: 'Service Unavailable\n' } });
    expect(keys(down)).toContain('retry-after: 5');
  });

  it('redirects with location first and an empty body; JSON replies answer 200 with the body Envoy sends', () => {
    const r = redirect('callback_success', 'https://app.example.com/x', ['s=v']);
    expect(deny(r)).toMatchObject({ status: 302, grpcCode: GRPC.UNAUTHENTICATED, body: '' });
    expect(keys(r)).toEqual(['location: https://app.example.com/x', 'cache-control: no-store', 'x-content-type-options: nosniff', 'referrer-policy: no-referrer', 'set-cookie: s=v']);
    const j = jsonReply('logout', { afterLogoutURL: '/' }, []);
    expect(deny(j)).toMatchObject({ status: 200, grpcCode: GRPC.UNAUTHENTICATED, body: '{"afterLogoutURL":"/"}\n' });
    expect(keys(j)[0]).toBe('content-type: application/json');
  });
});
