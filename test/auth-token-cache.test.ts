import { describe, expect, it } from 'vitest';
import { VerifiedTokenCache, type VerifiedAccess } from '../server/modules/auth/tokens.js';

function access(exp: number, sub = 'u1'): VerifiedAccess {
  return {
    sub,
    role: 'authenticated',
    email: 'a@example.com',
    email_verified: true,
    session_id: 's1',
    is_anonymous: false,
    app_metadata: { plan: 'pro' },
    aal: 'aal1',
    exp,
    iat: exp - 900,
  };
}

describe('the verified-token cache', () => {
  it('answers a verified token until its expiry, then forgets it', () => {
    const cache = new VerifiedTokenCache();
    cache.set('token-a', access(1_000));
    expect(cache.get('token-a', 999)?.sub).toBe('u1');
    expect(cache.get('token-a', 1_000)).toBeNull();
    expect(cache.size).toBe(0);
  });

  it('only hits the exact same token', () => {
    const cache = new VerifiedTokenCache();
    cache.set('token-a', access(1_000));
    expect(cache.get('token-a ', 10)).toBeNull();
    expect(cache.get('token-A', 10)).toBeNull();
  });

  it('hands out copies, so one caller cannot change what the next one gets', () => {
    const cache = new VerifiedTokenCache();
    cache.set('token-a', access(1_000));
    const first = cache.get('token-a', 10) as VerifiedAccess;
    first.app_metadata.plan = 'free';
    expect(cache.get('token-a', 10)?.app_metadata).toEqual({ plan: 'pro' });
  });

  it('stays within its bound, dropping the oldest entries first', () => {
    const cache = new VerifiedTokenCache(3);
    for (const name of ['a', 'b', 'c', 'd']) cache.set(name, access(1_000, name));
    expect(cache.size).toBe(3);
    expect(cache.get('a', 10)).toBeNull();
    expect(cache.get('d', 10)?.sub).toBe('d');
  });
});
