import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../server/config.js';
import { passkeyOrigins, passkeyRpId } from '../server/modules/auth/passkeys.js';

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig', () => {
  it('gives the documented defaults for an empty environment', () => {
    const config = loadConfig({});
    expect(config.port).toBe(8080);
    expect(config.host).toBe('127.0.0.1');
    expect(config.databaseUrl).toBeNull();
    expect(config.dataDir).toBe(path.resolve('.basalt'));
    expect(config.serviceKey).toBeNull();
    expect(config.publicUrl).toBe('http://127.0.0.1:8080');
    expect(config.storage.backend).toBe('fs');
    expect(config.smtpUrl).toBeNull();
    expect(config.auth.confirmEmail).toBe(false);
    expect(config.functionsDir).toBe(path.resolve('functions'));
    expect(config.roles).toEqual({ api: true, worker: true });
    expect(config.corsOrigins).toBe('*');
  });

  it('reads every variable of the API table', () => {
    const config = loadConfig({
      PORT: '9000',
      HOST: '0.0.0.0',
      DATABASE_URL: 'postgres://u:p@db.internal:5432/app',
      BASALT_DATA_DIR: '/var/lib/basalt',
      BASALT_SERVICE_KEY: 'k'.repeat(43),
      BASALT_PUBLIC_URL: 'https://api.example.com/',
      STORAGE_BACKEND: 's3',
      S3_ENDPOINT: 'http://minio:9000',
      S3_REGION: 'eu-west-1',
      S3_BUCKET: 'files',
      S3_ACCESS_KEY_ID: 'id',
      S3_SECRET_ACCESS_KEY: 'secret',
      S3_FORCE_PATH_STYLE: 'true',
      SMTP_URL: 'smtp://mail:25',
      BASALT_AUTH_CONFIRM_EMAIL: 'true',
      BASALT_FUNCTIONS_DIR: '/srv/functions',
      BASALT_ROLES: 'worker',
      BASALT_CORS_ORIGINS: 'https://a.example.com, https://b.example.com',
    });
    expect(config.port).toBe(9000);
    expect(config.host).toBe('0.0.0.0');
    expect(config.databaseUrl).toBe('postgres://u:p@db.internal:5432/app');
    expect(config.dataDir).toBe('/var/lib/basalt');
    expect(config.serviceKey).toBe('k'.repeat(43));
    expect(config.publicUrl).toBe('https://api.example.com');
    expect(config.storage).toMatchObject({
      backend: 's3',
      s3: {
        endpoint: 'http://minio:9000',
        region: 'eu-west-1',
        bucket: 'files',
        accessKeyId: 'id',
        secretAccessKey: 'secret',
        forcePathStyle: true,
      },
    });
    expect(config.smtpUrl).toBe('smtp://mail:25');
    expect(config.auth.confirmEmail).toBe(true);
    expect(config.functionsDir).toBe('/srv/functions');
    expect(config.roles).toEqual({ api: false, worker: true });
    expect(config.corsOrigins).toEqual(['https://a.example.com', 'https://b.example.com']);
  });

  it.each([
    [{ PORT: 'abc' }, 'PORT', 'whole number'],
    [{ PORT: '70000' }, 'PORT', '0 to 65535'],
    [{ PORT: '-1' }, 'PORT', 'whole number'],
    [{ DATABASE_URL: 'not a url' }, 'DATABASE_URL', 'not a valid URL'],
    [{ DATABASE_URL: 'mysql://localhost/db' }, 'DATABASE_URL', 'postgres://'],
    [{ STORAGE_BACKEND: 'ftp' }, 'STORAGE_BACKEND', 'fs or s3'],
    [{ STORAGE_BACKEND: 's3' }, 'S3_BUCKET', 'required'],
    [{ BASALT_ROLES: 'api,cron' }, 'BASALT_ROLES', 'api and worker'],
    [{ BASALT_CORS_ORIGINS: 'example.com' }, 'BASALT_CORS_ORIGINS', 'not an origin'],
    [{ BASALT_CORS_ORIGINS: 'https://a.example.com/path' }, 'BASALT_CORS_ORIGINS', 'not an origin'],
    [{ BASALT_AUTH_CONFIRM_EMAIL: 'maybe' }, 'BASALT_AUTH_CONFIRM_EMAIL', 'true or false'],
    [{ BASALT_SERVICE_KEY: 'short' }, 'BASALT_SERVICE_KEY', 'at least 32'],
    [{ BASALT_METRICS_TOKEN: 'short' }, 'BASALT_METRICS_TOKEN', 'at least 32'],
    [{ BASALT_PUBLIC_URL: 'ftp://x' }, 'BASALT_PUBLIC_URL', 'http://'],
    [{ SMTP_URL: 'http://mail' }, 'SMTP_URL', 'smtp://'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL', 'one of'],
    [{ BASALT_PASSKEY_RP_ID: 'https://example.com' }, 'BASALT_PASSKEY_RP_ID', 'domain name'],
    [{ BASALT_PASSKEY_ORIGINS: 'https://a.example.com/path' }, 'BASALT_PASSKEY_ORIGINS', 'not an origin'],
  ])('rejects %o naming %s', (env, variable, reason) => {
    const error = configError(env);
    expect(error.variable).toBe(variable);
    expect(error.message.startsWith(`${variable}: `)).toBe(true);
    expect(error.message).toContain(reason);
    expect(error.message).not.toContain('\n');
  });

  it('treats empty values as unset', () => {
    const config = loadConfig({ PORT: '', DATABASE_URL: '  ' });
    expect(config.port).toBe(8080);
    expect(config.databaseUrl).toBeNull();
  });

  it('reads the passkey relying party and its origins; defaults come from the public URL and CORS origins', () => {
    const base = { BASALT_PUBLIC_URL: 'https://api.example.com:8443' };
    const runtime = loadConfig;
    expect(passkeyRpId(runtime(base))).toBe('api.example.com');
    expect(passkeyOrigins(runtime(base))).toEqual(['https://api.example.com:8443']);
    expect(passkeyOrigins(runtime({ ...base, BASALT_CORS_ORIGINS: 'https://app.example.com' }))).toEqual([
      'https://app.example.com',
    ]);
    const explicit = runtime({
      ...base,
      BASALT_PASSKEY_RP_ID: 'Example.com',
      BASALT_PASSKEY_ORIGINS: 'https://app.example.com, https://admin.example.com/',
      BASALT_AUTH_APP_NAME: 'Acme',
      BASALT_AUTH_RATE_MFA_FAILED_USER: '7',
      BASALT_AUTH_RATE_MFA_IP: '70',
    });
    expect(passkeyRpId(explicit)).toBe('example.com');
    expect(passkeyOrigins(explicit)).toEqual(['https://app.example.com', 'https://admin.example.com']);
    expect(explicit.auth.appName).toBe('Acme');
    expect(explicit.auth.rateLimits).toMatchObject({ mfaFailedPerUser: 7, mfaPerIp: 70 });
    expect(loadConfig({}).auth.rateLimits).toMatchObject({ mfaFailedPerUser: 10, mfaPerIp: 100 });
  });
});
