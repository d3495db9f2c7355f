import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTempDir } from './helpers.js';
import { loadConfig } from '../server/config.js';
import { parseSecretsKey, resolveSecretsKey, resolveServiceKey, safeEqual } from '../server/internal/service-key.js';

const dir = useTempDir('basalt-key-');

describe('the service key', () => {
  it('uses BASALT_SERVICE_KEY when given and writes no file', async () => {
    const key = 'x'.repeat(40);
    const resolved = await resolveServiceKey(key, path.join(dir.path, 'env'));
    expect(resolved).toEqual({ key, source: 'env', file: null });
    await expect(stat(path.join(dir.path, 'env', 'service-key'))).rejects.toThrow();
  });

  it('generates at least 256 bits once, mode 0600, and reuses it', async () => {
    const dataDir = path.join(dir.path, 'generated');
    const first = await resolveServiceKey(null, dataDir);
    expect(first.source).toBe('file');
    expect(first.file).toBe(path.join(dataDir, 'service-key'));
    const encoded = first.key.replace(/^bsk_/, '');
    expect(Buffer.from(encoded, 'base64url').length).toBeGreaterThanOrEqual(32);
    expect(((await stat(first.file as string)).mode & 0o777).toString(8)).toBe('600');
    expect((await readFile(first.file as string, 'utf8')).trim()).toBe(first.key);
    const second = await resolveServiceKey(null, dataDir);
    expect(second.key).toBe(first.key);
  });

  it('gives every concurrent first start the same key', async () => {
    const dataDir = path.join(dir.path, 'race');
    const keys = await Promise.all(Array.from({ length: 5 }, () => resolveServiceKey(null, dataDir)));
    expect(new Set(keys.map((resolved) => resolved.key)).size).toBe(1);
  });

  it('compares keys exactly, whatever their lengths', () => {
    expect(safeEqual('abc', 'abc')).toBe(true);
    expect(safeEqual('abc', 'abd')).toBe(false);
    expect(safeEqual('abc', 'abcd')).toBe(false);
    expect(safeEqual('', 'abc')).toBe(false);
  });
});

describe('the secrets key', () => {
  it('is generated once into the data dir (256 bits, mode 0600) and reused; BASALT_SECRETS_KEY wins', async () => {
    const dataDir = path.join(dir.path, 'secrets');
    const first = await resolveSecretsKey(null, dataDir);
    expect(parseSecretsKey(first)?.length).toBe(32);
    const file = path.join(dataDir, 'secrets-key');
    expect(((await stat(file)).mode & 0o777).toString(8)).toBe('600');
    expect(await resolveSecretsKey(null, dataDir)).toBe(first);
    const configured = 'ab'.repeat(32);
    expect(await resolveSecretsKey(configured, path.join(dir.path, 'none'))).toBe(configured);
    await expect(stat(path.join(dir.path, 'none', 'secrets-key'))).rejects.toThrow();
  });

  it('takes 64 hex digits or 32 bytes of base64, and refuses anything else at start', () => {
    expect(parseSecretsKey('0f'.repeat(32))?.length).toBe(32);
    expect(parseSecretsKey(Buffer.alloc(32, 7).toString('base64'))?.length).toBe(32);
    expect(parseSecretsKey(Buffer.alloc(32, 7).toString('base64url'))?.length).toBe(32);
    for (const bad of ['', 'short', '0f'.repeat(31), Buffer.alloc(24).toString('base64'), 'zz'.repeat(32)]) {
      expect(parseSecretsKey(bad)).toBeNull();
    }
    expect(() => loadConfig({ BASALT_SECRETS_KEY: 'not-a-key' })).toThrow(/BASALT_SECRETS_KEY/);
    expect(loadConfig({ BASALT_SECRETS_KEY: 'ab'.repeat(32) }).secretsKey).toBe('ab'.repeat(32));
  });
});
