import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../server/app.js';
import { loadConfig } from '../server/config.js';
import type { Logger } from '../server/internal/log.js';
import { createTestDatabase, request, type TestDatabase } from './helpers.js';

/**
 * A function file with a bad option (a cron that is not one, a number out of its range) is reported — in the log and
 * under `errors` — and skipped; the server starts and every other function runs.
 */

let database: TestDatabase;
let dataDir: string;
let app: FastifyInstance;
let url: string;
const serviceKey = `bsk_${randomBytes(32).toString('base64url')}`;
const logLines: string[] = [];

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-load-errors-'));
  const functionsDir = path.join(dataDir, 'functions');
  await mkdir(functionsDir);
  const files: Record<string, string> = {
    'hello.ts': `import { http } from 'basalt/functions';
      export default http(async () => ({ hello: 'world' }));`,
    'nightly.ts': `import { schedule } from 'basalt/functions';
      export default schedule({ cron: '0 3 * * *' }, async () => {});`,
    'tuesdays.ts': `import { schedule } from 'basalt/functions';
      export default schedule({ cron: 'every tuesday-ish' }, async () => {});`,
    'withSeconds.ts': `import { schedule } from 'basalt/functions';
      export default schedule({ cron: '*/5 * * * * *' }, async () => {});`,
    // One good and one bad definition: the file is reported whole, and loads nothing.
    'mixed.ts': `import { http, schedule } from 'basalt/functions';
      export const fine = http(async () => 'fine');
      export const broken = schedule({ cron: '61 * * * *' }, async () => {});`,
    // Numeric options out of their documented ranges are refused, not clamped.
    'manyRetries.ts': `import { onDocument } from 'basalt/functions';
      export default onDocument({ collection: 'notes', on: 'create', retries: 50 }, async () => {});`,
    'wide.ts': `import { http } from 'basalt/functions';
      export default http({ concurrency: 100 }, async () => 'wide');`,
    'fractional.ts': `import { http } from 'basalt/functions';
      export default http({ timeout_ms: 99.5 }, async () => 'fractional');`,
    'textual.ts': `import { http } from 'basalt/functions';
      export default http({ memory_mb: '256' as unknown as number }, async () => 'textual');`,
    'inRange.ts': `import { http } from 'basalt/functions';
      export default http({ retries: 20, concurrency: 32, timeout_ms: 300000, memory_mb: 16 }, async () => 'edges');`,
  };
  for (const [name, source] of Object.entries(files)) await writeFile(path.join(functionsDir, name), source);

  database = await createTestDatabase();
  const config = loadConfig({
    BASALT_DATA_DIR: dataDir,
    BASALT_FUNCTIONS_DIR: functionsDir,
    BASALT_FUNCTIONS_WATCH: 'false',
    BASALT_DB_POOL_MAX: '6',
    PORT: '0',
  });
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  const logger = pino({ level: 'info' }, sink) as unknown as Logger;
  app = await buildApp({ ...config, databaseUrl: database.url, serviceKey }, { logger });
  url = await app.listen({ port: 0, host: '127.0.0.1' });
}, 120_000);

afterAll(async () => {
  await app?.close();
  await database?.drop();
  await rm(dataDir, { recursive: true, force: true });
});

describe('a function file with a bad schedule or an option out of range', () => {
  it('is reported under errors, and the other functions are listed', async () => {
    const response = await request(url, 'GET', '/v1/admin/functions', { token: serviceKey });
    expect(response.status).toBe(200);
    const body = response.body as {
      functions: Array<{ name: string }>;
      errors: Array<{ file: string; reason: string }>;
    };
    expect(body.functions.map((fn) => fn.name)).toEqual(['hello', 'inRange', 'nightly']);
    const errors = body.errors.map((error) => ({ file: path.basename(error.file), reason: error.reason }));
    expect(errors).toEqual([
      { file: 'fractional.ts', reason: expect.stringContaining('`timeout_ms` must be an integer from 100 to 300000') },
      { file: 'manyRetries.ts', reason: expect.stringContaining('`retries` must be an integer from 0 to 20 (got 50)') },
      { file: 'mixed.ts', reason: expect.stringContaining('broken: cron "61 * * * *" is not a valid cron expression') },
      {
        file: 'textual.ts',
        reason: expect.stringContaining('`memory_mb` must be an integer from 16 to 4096 (got "256")'),
      },
      {
        file: 'tuesdays.ts',
        reason: expect.stringContaining('cron "every tuesday-ish" is not a valid cron expression'),
      },
      { file: 'wide.ts', reason: expect.stringContaining('`concurrency` must be an integer from 1 to 32 (got 100)') },
      { file: 'withSeconds.ts', reason: expect.stringContaining('must have 5 fields') },
    ]);
  });

  it('is named in the log', () => {
    const line = logLines.find((text) => text.includes('tuesdays.ts') && text.includes('was not loaded'));
    expect(line).toBeDefined();
    expect(JSON.parse(line ?? '{}')).toMatchObject({ level: 50 });
  });

  it('leaves the other functions running', async () => {
    const response = await request(url, 'POST', '/v1/functions/hello', { token: serviceKey, body: {} });
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ hello: 'world' });
  });
});
