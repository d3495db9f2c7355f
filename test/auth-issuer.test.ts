import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../server/app.js';
import { loadConfig } from '../server/config.js';
import type { Logger } from '../server/internal/log.js';
import { freePort } from '../server/internal/net.js';
import { signIn, signUp, uniqueEmail } from './auth-helpers.js';
import { createTestDatabase, request, type TestDatabase } from './helpers.js';

/**
 * Two instances of one database, each on its own port and so with its own default public
 * URL (http://HOST:PORT), accept each other's access tokens: the issuer is stored in the
 * database at first start. The second instance says at start that its URL differs.
 */

interface Instance {
  app: FastifyInstance;
  url: string;
  publicUrl: string;
  log: string[];
  dataDir: string;
}

let database: TestDatabase;
const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
const instances: Instance[] = [];

async function startInstance(): Promise<Instance> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-issuer-'));
  const port = await freePort();
  const config = loadConfig({
    BASALT_DATA_DIR: dataDir,
    BASALT_FUNCTIONS_DIR: path.join(dataDir, 'functions'),
    BASALT_FUNCTIONS_WATCH: 'false',
    BASALT_DB_POOL_MAX: '6',
    PORT: String(port),
  });
  const log: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      log.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  const logger = pino({ level: 'info' }, sink) as unknown as Logger;
  const app = await buildApp({ ...config, databaseUrl: database.url, serviceKey }, { logger });
  // Each on the port its public URL names, as two instances on one machine would be.
  const url = await app.listen({ port, host: '127.0.0.1' });
  const instance = { app, url, publicUrl: config.publicUrl, log, dataDir };
  instances.push(instance);
  return instance;
}

function issuerOf(token: string): unknown {
  const payload = token.split('.')[1] ?? '';
  return (JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { iss?: unknown }).iss;
}

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  for (const instance of instances) {
    await instance.app.close();
    await rm(instance.dataDir, { recursive: true, force: true });
  }
  await database?.drop();
});

describe('two instances of one database on different ports', () => {
  let first: Instance;
  let second: Instance;

  beforeAll(async () => {
    first = await startInstance();
    second = await startInstance();
    expect(first.publicUrl).not.toBe(second.publicUrl);
  });

  it("accept each other's access tokens", async () => {
    const email = uniqueEmail('issuer');
    const signedUp = await signUp(first.url, email);
    const onSecond = await request(second.url, 'GET', '/v1/auth/user', { token: signedUp.session?.access_token ?? '' });
    expect(onSecond.status).toBe(200);

    const signedIn = await signIn(second.url, email);
    const onFirst = await request(first.url, 'GET', '/v1/auth/user', { token: signedIn.session?.access_token ?? '' });
    expect(onFirst.status).toBe(200);

    // Both name the issuer stored by the instance that started first.
    expect(issuerOf(signedUp.session?.access_token ?? '')).toBe(`${first.publicUrl}/v1/auth`);
    expect(issuerOf(signedIn.session?.access_token ?? '')).toBe(`${first.publicUrl}/v1/auth`);
  });

  it('report at start a public URL that differs from the stored issuer', () => {
    const warning = (log: string[]) =>
      log
        .map((line) => JSON.parse(line) as { level: number; msg: string })
        .find((line) => line.level === 40 && line.msg.includes('access tokens name the issuer'));
    expect(warning(first.log)).toBeUndefined();
    const line = warning(second.log);
    expect(line?.msg).toContain(`${first.publicUrl}/v1/auth`);
    expect(line?.msg).toContain(second.publicUrl);
  });
});
