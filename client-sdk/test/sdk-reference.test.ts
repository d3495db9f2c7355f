// docs/sdk-reference.md is generated from the SDK's types (npm run docs:sdk): it must match them.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { REFERENCE_FILE, renderReference } from '../scripts/reference.js';

describe('the SDK reference', () => {
  it(
    'is up to date with the SDK’s types (run `npm run docs:sdk` after changing them)',
    { timeout: 120_000 },
    async () => {
      const generated = await renderReference();
      expect(
        readFileSync(REFERENCE_FILE, 'utf8') === generated,
        'docs/sdk-reference.md is stale: run npm run docs:sdk',
      ).toBe(true);
    },
  );

  it('documents every public call and none of the internals', { timeout: 120_000 }, async () => {
    const page = readFileSync(REFERENCE_FILE, 'utf8');
    for (const shown of [
      'createClient(url: string',
      'endBefore(cursor',
      'remove(paths: readonly string[])',
      'isBasaltError',
    ]) {
      expect(page).toContain(shown);
    }
    for (const hidden of ['joinChannel', 'ChannelMembership', '#membership', 'handle(frame']) {
      expect(page).not.toContain(hidden);
    }
  });
});
