import { afterAll } from 'vitest';
import { createCollection } from '../../test/documents-support.js';
import type { TestApp } from '../../test/helpers.js';
import { STRONG_PASSWORD, uniqueEmail } from '../../test/auth-helpers.js';
import { createClient, type BasaltClient } from '../src/index.js';

/** An SDK client of a new user signed up by email and password; it keeps and refreshes nothing by itself. */
export async function signedInClient(baseUrl: string): Promise<BasaltClient> {
  const client = createClient(baseUrl, { persistSession: false, autoRefreshToken: false });
  await client.auth.signUp({ email: uniqueEmail('sdk'), password: STRONG_PASSWORD });
  return client;
}

/** The collections the live-query tests write: notes anyone may change, todos each user owns. */
export async function createLiveCollections(server: TestApp): Promise<void> {
  await createCollection(server, {
    name: 'notes',
    rules: { read: 'true', create: 'true', update: 'true', delete: 'true' },
  });
  await createCollection(server, {
    name: 'todos',
    rules: { read: 'auth != null && doc.owner == auth.uid', create: 'auth != null' },
  });
}

/**
 * The SDK clients a test file makes: push each one here, and after the file's tests their
 * sockets close and their refresh timers stop, so nothing outlives the server.
 */
export function clientsStoppedAfterAll(): BasaltClient[] {
  const clients: BasaltClient[] = [];
  afterAll(() => {
    for (const basalt of clients) {
      basalt.realtime.disconnect();
      basalt.auth.stopAutoRefresh();
    }
  });
  return clients;
}
