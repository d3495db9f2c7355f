import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../server/config.js';
import { PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH } from '../server/modules/auth/passwords.js';
import { QUERY_LIMITS } from '../server/modules/documents/query.js';
import { MAX_BATCH_OPS } from '../server/modules/documents/service.js';
import { MAX_PRESENCE_BYTES } from '../server/modules/realtime/channels.js';
import { LIVE_QUERY_MAX_DOCUMENTS } from '../server/modules/realtime/live-subscription.js';
import { MAX_PATH_BYTES } from '../server/modules/storage/paths.js';
import { LIMITS as RULE_LIMITS } from '../server/internal/rules/index.js';
import {
  MAX_BATCH_SIZE,
  MAX_DELAY_SECONDS,
  MAX_KEY_LENGTH,
  MAX_PAYLOAD_BYTES,
  MAX_PUBLISH_BATCH,
  MAX_PUBLISH_BODY_BYTES,
} from '../server/modules/events/service.js';

/** docs/limits.md: each value a variable changes is that variable's default; fixed values match the code. */

interface Row {
  limit: string;
  value: string;
  changedBy: string;
}

let rows: Row[];

function cells(line: string): string[] {
  return line
    .split('|')
    .slice(1, -1)
    .map((cell) => cell.trim());
}

/** The configuration without the copy of the environment it keeps for functions. */
function settings(env: Record<string, string>): Omit<Config, 'environment'> {
  const { environment: _environment, ...rest } = loadConfig(env);
  return rest;
}

function row(limit: string): Row {
  const found = rows.find((candidate) => candidate.limit.startsWith(limit));
  if (!found) throw new Error(`docs/limits.md has no row "${limit}"`);
  return found;
}

beforeAll(async () => {
  const page = await readFile(path.resolve(import.meta.dirname, '../docs/limits.md'), 'utf8');
  rows = page
    .split('\n')
    .filter((line) => line.startsWith('|') && !/^\|\s*-/.test(line) && !line.startsWith('| limit '))
    .map((line) => {
      const [limit = '', value = '', changedBy = ''] = cells(line);
      return { limit, value, changedBy };
    });
});

describe('docs/limits.md', () => {
  it('gives each variable its default: setting the variable to the page’s value changes nothing', () => {
    const defaults = settings({});
    const checked: string[] = [];
    for (const { limit, value, changedBy } of rows) {
      const variable = /^`([A-Z][A-Z0-9_]+)`$/.exec(changedBy)?.[1];
      if (!variable) continue;
      const number = /`(\d+)`/.exec(value)?.[1];
      expect(number, `${limit}: the value of a variable's row starts with its number in backticks`).toBeDefined();
      expect(settings({ [variable]: number as string }), `${variable} = ${number}`).toEqual(defaults);
      checked.push(variable);
    }
    expect(checked.length).toBeGreaterThanOrEqual(25);
  });

  it('states the fixed limits the code has', () => {
    expect(row('documents per query page').value).toContain(
      `1–${QUERY_LIMITS.maxLimit}, default ${QUERY_LIMITS.defaultLimit}`,
    );
    expect(row('conditions in one query').value).toBe(String(QUERY_LIMITS.maxConditions));
    expect(row('values of `in`').value).toBe(String(QUERY_LIMITS.maxListValues));
    expect(row('`order_by` terms').value).toBe(String(QUERY_LIMITS.maxOrderBy));
    expect(row('nesting of `or`/`and` groups').value).toBe(String(QUERY_LIMITS.maxGroupDepth));
    expect(row('operations in one batch').value).toBe(`1–${MAX_BATCH_OPS}`);
    expect(row('rule source').value).toContain(`${RULE_LIMITS.maxBytes} bytes`);
    expect(row('nesting (parentheses').value).toBe(`${RULE_LIMITS.maxDepth} levels`);
    expect(row('elements of one array literal').value).toBe(String(RULE_LIMITS.maxArrayItems));
    expect(row('segments of one field path').value).toBe(String(RULE_LIMITS.maxPathSegments));
    expect(row('event payload').value).toContain(`${MAX_PAYLOAD_BYTES} bytes`);
    expect(row('events of one batch publish').value).toBe(`1–${MAX_PUBLISH_BATCH}`);
    expect(row('body of a publish request').value).toContain(`${MAX_PUBLISH_BODY_BYTES} bytes`);
    expect(row('`delay_seconds` of a publish').value).toBe(`0–${MAX_DELAY_SECONDS}`);
    expect(row('`key` of a publish').value).toBe(`1–${MAX_KEY_LENGTH} characters`);
    expect(row('`batch_size` of a subscriber').value).toBe(`1–${MAX_BATCH_SIZE}`);
    expect(row('a presence payload').value).toContain(`${MAX_PRESENCE_BYTES} bytes`);
    expect(row('documents of a live query without `limit`').value).toBe(String(LIVE_QUERY_MAX_DOCUMENTS));
    expect(row('documents of a live query window').value).toContain(`1–${QUERY_LIMITS.maxLimit}`);
    expect(row('object path').value).toContain(`1–${MAX_PATH_BYTES} bytes`);
    expect(row('password').value).toContain(`${PASSWORD_MIN_LENGTH}–${PASSWORD_MAX_LENGTH} characters`);
  });
});
