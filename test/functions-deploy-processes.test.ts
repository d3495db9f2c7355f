import { createDecipheriv, randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BasaltProcess } from './basalt-process.js';
import { createTestDatabase, request, waitFor, type TestDatabase } from './helpers.js';

/**
 * Two Basalt processes (what `npm start` runs) on one database, sharing BASALT_SECRETS_KEY:
 * a deploy and a secret set through one are used by the other within 5 s, and a process
 * killed with kill -9 and started again serves the same set.
 */
let database: TestDatabase;
const secretsKey = randomBytes(32).toString('hex');
const processes: BasaltProcess[] = [];

async function start(): Promise<BasaltProcess> {
  const server = await BasaltProcess.spawn({ DATABASE_URL: database.url, BASALT_SECRETS_KEY: secretsKey });
  processes.push(server);
  await server.ready();
  return server;
}

beforeAll(async () => {
  database = await createTestDatabase();
}, 120_000);

afterAll(async () => {
  for (const server of processes) await server.stop();
  await database.drop();
});

const reader = `import { http } from 'basalt/functions';
export default http({ secrets: ['SHARED_TOKEN'] }, async (_request, ctx) => ({ token: ctx.secrets.SHARED_TOKEN ?? null }));
`;

describe('deploys across processes', () => {
  it('serves what one process deploys on the other, with its secrets, and after a kill -9', async () => {
    const [a, b] = await Promise.all([start(), start()]);
    // Each process has its own service key here: admin calls go to A, with A's.
    const setSecret = await request(a.url, 'PUT', '/v1/admin/secrets/SHARED_TOKEN', {
      token: a.serviceKey,
      body: { value: 'shared-value-1' },
    });
    expect(setSecret.status).toBe(204);
    const deployed = await request(a.url, 'PUT', '/v1/admin/functions/shared', {
      token: a.serviceKey,
      body: {
        files: { 'index.ts': reader },
        entry: 'index.ts',
      },
    });
    expect(deployed.status, deployed.text).toBe(201);
    const started = Date.now();
    await waitFor(
      'B to serve the deploy with the secret',
      async () =>
        JSON.stringify((await request(b.url, 'POST', '/v1/functions/shared', { body: {} })).body) ===
        JSON.stringify({ token: 'shared-value-1' }),
      5_000,
      50,
    );
    expect(Date.now() - started).toBeLessThan(5_000);

    await request(a.url, 'PUT', '/v1/admin/secrets/SHARED_TOKEN', {
      token: a.serviceKey,
      body: { value: 'shared-value-2' },
    });
    await waitFor(
      'B to see the rotated secret',
      async () =>
        JSON.stringify((await request(b.url, 'POST', '/v1/functions/shared', { body: {} })).body) ===
        JSON.stringify({ token: 'shared-value-2' }),
      5_000,
      50,
    );

    // At rest: AES-256-GCM under BASALT_SECRETS_KEY, with the name as associated data.
    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    const { rows } = await client
      .query<{ name: string; iv: Buffer; ciphertext: Buffer; tag: Buffer }>(
        "SELECT name, iv, ciphertext, tag FROM basalt.secrets WHERE name = 'SHARED_TOKEN'",
      )
      .finally(() => client.end());
    const sealed = rows[0]!;
    expect(sealed.ciphertext.toString('utf8')).not.toContain('shared-value');
    const open = (key: Buffer, name: string) => {
      const decipher = createDecipheriv('aes-256-gcm', key, sealed.iv);
      decipher.setAAD(Buffer.from(name, 'utf8'));
      decipher.setAuthTag(sealed.tag);
      return Buffer.concat([decipher.update(sealed.ciphertext), decipher.final()]).toString('utf8');
    };
    expect(open(Buffer.from(secretsKey, 'hex'), 'SHARED_TOKEN')).toBe('shared-value-2');
    expect(() => open(randomBytes(32), 'SHARED_TOKEN')).toThrow();
    expect(() => open(Buffer.from(secretsKey, 'hex'), 'OTHER_NAME')).toThrow();

    b.child.kill('SIGKILL');
    await b.exited();
    const c = await start();
    expect((await request(c.url, 'POST', '/v1/functions/shared', { body: {} })).body).toEqual({
      token: 'shared-value-2',
    });
  }, 180_000);
});
