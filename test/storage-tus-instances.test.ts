import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBucket, createTestDatabase, request, startTestApp, type TestApp, type TestDatabase } from './helpers.js';
import { startS3Server, type S3Server } from './storage-helpers.js';

const MIB = 1024 * 1024;

/**
 * An upload's SHA-256 is hashed in process while its PATCHes land on one instance in order
 * (uploads.ts, upload-hashes.ts). These prove the fallback: when the PATCHes move between two
 * instances of one deployment, the object still ends with the SHA-256 (and ETag) of its bytes.
 */
describe.each(['fs', 's3'] as const)('a tus upload moving between instances (%s backend)', (backendKind) => {
  let database: TestDatabase;
  let dataDir: string;
  let s3: S3Server | null = null;
  let first: TestApp;
  let second: TestApp;

  beforeAll(async () => {
    database = await createTestDatabase();
    // One deployment: both instances share the database and the store (disk folder or S3 bucket).
    dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-tus-instances-'));
    if (backendKind === 's3') s3 = await startS3Server();
    const env = { BASALT_DATA_DIR: dataDir, S3_PART_SIZE: String(5 * MIB), ...(s3?.env ?? {}) };
    first = await startTestApp(database, env);
    second = await startTestApp(database, env);
    await createBucket(first, { name: 'moves' });
  });

  afterAll(async () => {
    await second?.close();
    await first?.close();
    await s3?.close();
    await database?.drop();
    await rm(dataDir, { recursive: true, force: true });
  });

  async function create(name: string, length: number): Promise<string> {
    const created = await request(first.url, 'POST', '/v1/storage/uploads', {
      token: first.serviceKey,
      headers: {
        'tus-resumable': '1.0.0',
        'upload-length': String(length),
        'upload-metadata': `bucket ${Buffer.from('moves').toString('base64')},path ${Buffer.from(name).toString('base64')}`,
      },
    });
    expect(created.status, created.text).toBe(201);
    return created.headers.get('location') as string;
  }

  async function patch(app: TestApp, location: string, data: Buffer, start: number, end: number) {
    const res = await request(app.url, 'PATCH', location, {
      token: app.serviceKey,
      headers: {
        'tus-resumable': '1.0.0',
        'upload-offset': String(start),
        'content-type': 'application/offset+octet-stream',
        prefer: 'return=representation',
      },
      rawBody: new Uint8Array(data.subarray(start, end)),
    });
    expect(res.status, res.text).toBe(end === data.length ? 200 : 204);
    expect(res.headers.get('upload-offset')).toBe(String(end));
    return res;
  }

  async function expectStored(name: string, data: Buffer, object: unknown): Promise<void> {
    const sha256 = createHash('sha256').update(data).digest('hex');
    expect(object).toMatchObject({ path: name, size: data.length, sha256 });
    // Either instance serves the object with the ETag of its bytes.
    for (const app of [first, second]) {
      const res = await fetch(`${app.url}/v1/storage/moves/${name}`, {
        headers: { authorization: `Bearer ${app.serviceKey}` },
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('etag')).toBe(`"${sha256}"`);
      expect(
        createHash('sha256')
          .update(Buffer.from(await res.arrayBuffer()))
          .digest('hex'),
      ).toBe(sha256);
    }
  }

  // Which instance takes each PATCH: [instance, end offset] in order (the last ends the upload).
  const journeys: Array<[string, number, Array<['first' | 'second', number]>]> = [
    [
      'is resumed on another instance',
      7 * MIB + 321,
      [
        ['first', 3 * MIB],
        ['second', 7 * MIB + 321],
      ],
    ],
    // The first instance's running hash stops at 3 MiB; it must not be taken for the whole.
    [
      'comes back to the first instance after moving away',
      9 * MIB + 5,
      [
        ['first', 3 * MIB],
        ['second', 6 * MIB],
        ['first', 9 * MIB + 5],
      ],
    ],
    [
      'arrives all on one instance in order',
      6 * MIB + 77,
      [
        ['second', 2 * MIB],
        ['second', 4 * MIB],
        ['second', 6 * MIB + 77],
      ],
    ],
  ];

  it.each(journeys)('ends with the right SHA-256 when it %s', async (journey, size, steps) => {
    const data = randomBytes(size);
    const name = `${journey.replaceAll(' ', '-')}.bin`;
    const location = await create(name, data.length);
    let offset = 0;
    let last: Awaited<ReturnType<typeof patch>> | null = null;
    for (const [instance, end] of steps) {
      last = await patch(instance === 'first' ? first : second, location, data, offset, end);
      offset = end;
    }
    await expectStored(name, data, last?.body);
  });
});
