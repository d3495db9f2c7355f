import { afterAll } from 'vitest';
import { createCollection } from '../../test/documents-support.js';
import type { TestApp } from '../../test/helpers.js';
import type { BasaltClient } from '../src/index.js';

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
