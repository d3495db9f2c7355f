// The pages a new user reaches for exist, are linked from the docs index, and cover what each
// promises: a page that loses a topic (or is renamed without its links) fails here. Their
// examples are run and compiled by docs-examples.test.ts; configuration.md, limits.md, the
// rules cookbook and the SDK reference are compared with the code by their own tests.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');

/** Each page, and what it must speak of: a heading or a term per topic. */
const PAGES: Record<string, Record<string, RegExp>> = {
  'docs/sdk-getting-started.md': {
    install: /^## Install$/m,
    import: /^import \{ createClient[^}]*\} from '@basalt\/client';$/m,
    'a browser client': /^### In a browser$/m,
    'a Node client with ws and session storage':
      /^### On Node 20$[\s\S]*import WebSocket from 'ws';[\s\S]*SessionStorage/m,
    'a complete small app': /^## A complete small app/m,
  },
  'client-sdk/README.md': {
    'the getting-started page': /\(\.\.\/docs\/sdk-getting-started\.md\)/,
    'the reference': /\(\.\.\/docs\/sdk-reference\.md\)/,
  },
  'docs/sdk-reference.md': {
    'createClient and its options': /createClient[\s\S]*ClientOptions/,
    'functions.invoke': /invoke/,
  },
  'docs/production.md': {
    'TLS and the proxy': /^## TLS and the reverse proxy$/m,
    BASALT_PUBLIC_URL: /^## `BASALT_PUBLIC_URL`$/m,
    'key encryption': /BASALT_AUTH_KEY_ENCRYPTION_KEY/,
    'the CORS allow-list': /^## CORS$[\s\S]*BASALT_CORS_ORIGINS/m,
    'trusted proxies': /BASALT_TRUST_PROXY/,
    SMTP: /SMTP_URL/,
    'metrics and docs exposure': /^## Metrics, `\/docs`/m,
    'embedded vs external Postgres': /^## Postgres: embedded or external$/m,
  },
  'docs/backup-restore.md': {
    'Postgres and storage, consistently': /^## What must agree$[\s\S]*^## Postgres$[\s\S]*^## Storage$/m,
    'what a restore does to cursors': /^## What a restore does$[\s\S]*cursor/m,
  },
  'docs/upgrading.md': {
    migrations: /^## How migrations run$/m,
    fleets: /^## A fleet$/m,
  },
  'docs/rules-cookbook.md': {
    'owner-only': /^## Owner only$/m,
    members: /^## Team members$/m,
    'roles via claims': /^## Roles from claims$/m,
    'public read': /^## Public read/m,
    'storage paths per user': /^## Storage: files per user$/m,
  },
  'docs/limits.md': {
    'the live query cap': /live query without `limit`[^\n]*\|\s*1000\s*\|/,
    'subscriptions per connection': /live queries \(subscriptions\) per websocket[^\n]*`100`/,
  },
  'docs/configuration.md': { 'every variable': /BASALT_PUBLIC_URL/ },
};

const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

describe('the pages issue-level docs promise', () => {
  it.each(Object.entries(PAGES))('%s covers its topics', (file, topics) => {
    expect(existsSync(path.join(ROOT, file)), file).toBe(true);
    const text = read(file);
    const missing = Object.entries(topics)
      .filter(([, pattern]) => !pattern.test(text))
      .map(([topic]) => topic);
    expect(missing).toEqual([]);
  });

  it('are linked from the docs index', () => {
    const index = read('docs/README.md');
    const unlinked = Object.keys(PAGES)
      .filter((file) => file.startsWith('docs/'))
      .map((file) => path.basename(file))
      .filter((page) => !index.includes(`(${page})`));
    expect(unlinked).toEqual([]);
  });
});
