/**
 * Topics: what a publisher can send (`POST /v1/events/:topic`, one event or a batch) and who
 * may configure topics. Bad names, bodies, keys and delays are 400, oversized payloads 413,
 * publishing without the service key or an allowing rule 401/403 (a batch is refused whole),
 * never a 500. One row per attack; see harness.ts.
 */
import { expect } from 'vitest';
import { signUp } from '../auth-helpers.js';
import { request } from '../helpers.js';
import { securitySuite } from './harness.js';

interface Fixture {
  user: string;
}

const publish = (topic: string, body: unknown, as: string = 'service') => ({
  method: 'POST',
  path: `/v1/events/${topic}`,
  as,
  body,
});

securitySuite<Fixture>({
  surface: 'events',
  setup: async (server) => {
    const set = await request(server.url, 'PUT', '/v1/admin/topics/small.only', {
      token: server.serviceKey,
      body: { rules: { publish: 'auth != null && payload.size < 10' } },
    });
    expect(set.status).toBe(200);
    return { user: (await signUp(server.url)).token };
  },
  tokenOf: (fixture, actor) =>
    actor === 'user'
      ? fixture.user
      : actor === 'bearer-bogus'
        ? 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl'
        : undefined,
  attacks: [
    ...['Upper', '9start', '-dash', 'a b', 'a/b', `a${'x'.repeat(128)}`, '%00', 'é'].map((topic) => ({
      name: `a topic name like ${JSON.stringify(topic.slice(0, 20))} is refused`,
      request: () => publish(encodeURIComponent(topic), { payload: {} }),
      status: 400,
      code: 'INVALID_REQUEST',
    })),
    {
      name: 'a body without a payload is refused',
      request: () => publish('ok.topic', { key: 'k' }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'an unknown field is refused',
      request: () => publish('ok.topic', { payload: 1, priority: 9 }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    ...[{ key: '' }, { key: 'k'.repeat(257) }, { key: 42 }].map((extra) => ({
      name: `a key ${JSON.stringify(extra.key).slice(0, 20)} is refused`,
      request: () => publish('ok.topic', { payload: 1, ...extra }),
      status: 400,
      code: 'INVALID_REQUEST',
    })),
    ...[-1, 901, 1.5, '10'].map((delay) => ({
      name: `delay_seconds ${JSON.stringify(delay)} is refused`,
      request: () => publish('ok.topic', { payload: 1, delay_seconds: delay }),
      status: 400,
      code: 'INVALID_REQUEST',
    })),
    {
      name: 'a payload over 256 KiB is 413 and publishes nothing',
      request: () => publish('ok.topic', { payload: 'x'.repeat(256 * 1024 + 10) }),
      status: 413,
      code: 'PAYLOAD_TOO_LARGE',
    },
    {
      name: 'a body far over the limit is 413',
      request: () => publish('ok.topic', { payload: 'x'.repeat(2 * 1024 * 1024) }),
      status: 413,
      code: 'PAYLOAD_TOO_LARGE',
    },
    {
      name: 'malformed JSON is 400',
      request: () => ({
        method: 'POST',
        path: '/v1/events/ok.topic',
        as: 'service',
        rawBody: '{"payload": ',
        headers: { 'content-type': 'application/json' },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
    {
      name: 'publishing without a token is 401',
      request: () => publish('ok.topic', { payload: 1 }, 'anonymous'),
      status: 401,
      code: 'UNAUTHENTICATED',
    },
    {
      name: 'publishing with a forged token is 401',
      request: () => publish('ok.topic', { payload: 1 }, 'bearer-bogus'),
      status: 401,
      code: 'UNAUTHENTICATED',
    },
    {
      name: 'a user cannot publish to a topic without a publish rule',
      request: () => publish('ok.topic', { payload: 1 }, 'user'),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'a user cannot publish what the rule denies',
      request: () => publish('small.only', { payload: { size: 99 } }, 'user'),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'a payload that is not an object fails the rule, not the server',
      request: () => publish('small.only', { payload: 'size' }, 'user'),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'a user may publish what the rule allows',
      request: () => publish('small.only', { payload: { size: 1 } }, 'user'),
      status: 202,
    },
    // Batch publishes ({events: [...]}): refused whole, never a 500.
    ...[
      ['an empty batch', { events: [] }],
      ['a batch of 1,001 events', { events: Array.from({ length: 1001 }, () => ({ payload: 1 })) }],
      ['events that are not a list', { events: { payload: 1 } }],
      ['an event that is not an object', { events: [{ payload: 1 }, 'x'] }],
      ['an event without a payload', { events: [{ payload: 1 }, { key: 'k' }] }],
      ['an event with an unknown field', { events: [{ payload: 1, priority: 9 }] }],
      ['an event with a bad key', { events: [{ payload: 1 }, { payload: 2, key: '' }] }],
      ['an event with a bad delay', { events: [{ payload: 1, delay_seconds: 901 }] }],
      ['a batch beside a payload', { events: [{ payload: 1 }], payload: 2 }],
      ['a batch with a key of its own', { events: [{ payload: 1 }], key: 'k' }],
    ].map(([what, body]) => ({
      name: `${String(what)} is refused`,
      request: () => publish('ok.topic', body),
      status: 400,
      code: 'INVALID_REQUEST',
    })),
    {
      name: 'a batch with one payload over 256 KiB is 413 and publishes nothing',
      request: () => publish('ok.topic', { events: [{ payload: 1 }, { payload: 'x'.repeat(256 * 1024 + 10) }] }),
      status: 413,
      code: 'PAYLOAD_TOO_LARGE',
    },
    {
      name: 'a batch body over 1 MiB is 413',
      request: () =>
        publish('ok.topic', { events: Array.from({ length: 5 }, () => ({ payload: 'x'.repeat(250 * 1024) })) }),
      status: 413,
      code: 'PAYLOAD_TOO_LARGE',
    },
    {
      name: 'a batch without a token is 401',
      request: () => publish('small.only', { events: [{ payload: { size: 1 } }] }, 'anonymous'),
      status: 401,
      code: 'UNAUTHENTICATED',
    },
    {
      name: 'a user cannot publish a batch to a topic without a publish rule',
      request: () => publish('ok.topic', { events: [{ payload: 1 }] }, 'user'),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'a user cannot publish a batch of which the rule denies one event',
      request: () => publish('small.only', { events: [{ payload: { size: 1 } }, { payload: { size: 99 } }] }, 'user'),
      status: 403,
      code: 'FORBIDDEN',
    },
    {
      name: 'a user may publish a batch the rule allows whole',
      request: () => publish('small.only', { events: [{ payload: { size: 1 } }, { payload: { size: 2 } }] }, 'user'),
      status: 202,
    },
    ...[
      ['GET', '/v1/admin/topics'],
      ['PUT', '/v1/admin/topics/small.only'],
      ['DELETE', '/v1/admin/topics/small.only'],
    ].map(([method, path]) => ({
      name: `${method} ${path} needs the service key, not a user token`,
      request: () => ({ method: method!, path: path!, as: 'user', body: method === 'PUT' ? { rules: {} } : undefined }),
      status: 403,
      code: 'FORBIDDEN',
    })),
    {
      name: 'a publish rule reading a document is refused when saved',
      request: () => ({
        method: 'PUT',
        path: '/v1/admin/topics/ok.topic',
        as: 'service',
        body: { rules: { publish: 'doc.owner == auth.uid' } },
      }),
      status: 400,
      code: 'INVALID_RULE',
    },
    {
      name: 'a rule other than publish is refused',
      request: () => ({
        method: 'PUT',
        path: '/v1/admin/topics/ok.topic',
        as: 'service',
        body: { rules: { subscribe: 'true' } },
      }),
      status: 400,
      code: 'INVALID_REQUEST',
    },
  ],
});
