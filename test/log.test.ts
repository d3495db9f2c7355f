import { describe, expect, it } from 'vitest';
import { createLogger, redactCredentials } from '../server/internal/log.js';

/** A real pino logger writing JSON lines into memory. */
function memoryLogger(): { log: ReturnType<typeof createLogger>; text: () => string } {
  const lines: string[] = [];
  const log = createLogger('trace', { destination: { write: (line: string) => void lines.push(line) } });
  return { log, text: () => lines.join('') };
}

describe('redactCredentials', () => {
  it.each([
    ['/v1/realtime?access_token=eyJ.a.b', '/v1/realtime?access_token=[redacted]'],
    [
      '/v1/auth/verify?type=signup&token=abc&redirect_to=x',
      '/v1/auth/verify?type=signup&token=[redacted]&redirect_to=x',
    ],
    ['/v1/storage/b/p.txt?expires=1&sig=Zm9v-_', '/v1/storage/b/p.txt?expires=1&sig=[redacted]'],
    ['/cb?CODE=1&state=s', '/cb?CODE=[redacted]&state=s'],
    ['/x?%61ccess_token=t', '/x?%61ccess_token=[redacted]'],
    ['/x?token=a&token=b', '/x?token=[redacted]&token=[redacted]'],
    ['/x?token=', '/x?token='],
    ['/x?tokens=a&mytoken=b', '/x?tokens=a&mytoken=b'],
    ['Route GET:/x?apikey=k1 not found', 'Route GET:/x?apikey=[redacted] not found'],
    ['/x?%zz=1&key=v', '/x?%zz=1&key=[redacted]'],
    ['no query here', 'no query here'],
  ])('%s', (input, expected) => {
    expect(redactCredentials(input)).toBe(expected);
  });
});

describe('the logger', () => {
  it('redacts credentials in messages, errors, causes and url/path fields', () => {
    const { log, text } = memoryLogger();
    log.info('opened /v1/realtime?access_token=secret-1');
    log.error(new Error('reply already sent for /v1/auth/verify?token=secret-2'));
    log.warn(
      { err: new Error('outer', { cause: new Error('inner /x?sig=secret-3') }) },
      'failed for %s',
      '/y?code=secret-4',
    );
    log.info({ url: '/z?refresh_token=secret-5', path: 'a?password=secret-6', reason: '/r?key=secret-8' }, 'fields');
    log.info({ mail: { access_token: 'secret-7' } }, 'objects keep their own redaction');
    const output = text();
    for (let i = 1; i <= 8; i++) expect(output).not.toContain(`secret-${i}`);
    expect(output).toContain('access_token=[redacted]');
    expect(output).toContain('"msg":"reply already sent for /v1/auth/verify?token=[redacted]"');
    expect(output).toContain('fields');
  });
});
