import { randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import { request, type TestApp } from './helpers.js';
import type { Doc as WireDoc } from '../client-sdk/src/wire.js';

export interface TestUser {
  id: string;
  token: string;
  email: string;
}

/** Signs a fresh user up through the real auth API and returns its access token. */
export async function signUp(server: TestApp): Promise<TestUser> {
  const email = `user-${randomBytes(6).toString('hex')}@example.com`;
  const response = await request(server.url, 'POST', '/v1/auth/signup', {
    body: { email, password: `Correct-Horse-${randomBytes(8).toString('hex')}` },
  });
  expect(response.status).toBe(201);
  const body = response.body as { user: { id: string }; session: { access_token: string } };
  return { id: body.user.id, token: body.session.access_token, email };
}

/** Creates a collection with the service key; fails the test unless it is created. */
export async function createCollection(server: TestApp, body: Record<string, unknown>): Promise<void> {
  const response = await request(server.url, 'POST', '/v1/admin/collections', { body, token: server.serviceKey });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
}

/** A document as the API answers it. */
export type Doc = WireDoc;
