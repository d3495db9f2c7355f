import { expect } from 'vitest';
import { request, type TestApp } from './helpers.js';
import type { Doc as WireDoc } from '../client-sdk/src/wire.js';

/** Creates a collection with the service key; fails the test unless it is created. */
export async function createCollection(server: TestApp, body: Record<string, unknown>): Promise<void> {
  const response = await request(server.url, 'POST', '/v1/admin/collections', { body, token: server.serviceKey });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
}

/** A document as the API answers it. */
export type Doc = WireDoc;
