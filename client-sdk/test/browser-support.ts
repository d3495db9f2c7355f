import { existsSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll } from 'vitest';
import { createTestDatabase, startTestApp, type TestApp } from '../../test/helpers.js';

/** Debian's chromium; the browser tests skip themselves where it is not installed. */
export const CHROMIUM = '/usr/bin/chromium';
export const haveBrowser = existsSync(CHROMIUM);

/**
 * Launches Debian's chromium headless. The background-networking flags keep it from dialling
 * Google's hosts, which a closed network refuses many at a time.
 */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

export interface BrowserHarness {
  browser: Browser;
  /** A page on its own origin that loads the SDK as the global `Basalt`. */
  pageUrl: string;
  close(): Promise<void>;
}

/**
 * Bundles the SDK for the browser, serves it from a page of its own origin, and launches
 * chromium. `pageHost` names the page's host in its URL (e.g. `localhost`, which WebAuthn
 * accepts as a relying party where it refuses an IP address); it always listens on loopback.
 */
export async function startBrowserHarness(options: { pageHost?: string } = {}): Promise<BrowserHarness> {
  const bundle = await build({
    entryPoints: [fileURLToPath(new URL('../src/index.ts', import.meta.url))],
    bundle: true,
    format: 'iife',
    globalName: 'Basalt',
    platform: 'browser',
    write: false,
  });
  const sdk = bundle.outputFiles[0]?.text ?? '';
  const pages = http.createServer((incoming, response) => {
    if (incoming.url?.startsWith('/sdk.js')) {
      response.writeHead(200, { 'content-type': 'text/javascript' }).end(sdk);
      return;
    }
    response.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><script src="/sdk.js"></script>');
  });
  await new Promise<void>((resolve) => pages.listen(0, '127.0.0.1', resolve));
  const pageUrl = `http://${options.pageHost ?? '127.0.0.1'}:${(pages.address() as AddressInfo).port}/app`;
  const browser = await launchChromium();
  return {
    browser,
    pageUrl,
    async close() {
      await browser.close();
      await new Promise((resolve) => pages.close(resolve));
    },
  };
}

export interface BrowserSuite {
  server: TestApp;
  browser: Browser;
  pageUrl: string;
  close(): Promise<void>;
}

/**
 * The hooks of a browser test file: before its tests, startBrowserSuite(options) and then
 * `ready` with the suite; after them, the suite closed. Nothing starts where chromium is absent.
 */
export function useBrowserSuite(
  options: Parameters<typeof startBrowserSuite>[0] & { ready: (suite: BrowserSuite) => void },
): void {
  let suite: BrowserSuite | undefined;
  beforeAll(async () => {
    if (!haveBrowser) return;
    suite = await startBrowserSuite(options);
    options.ready(suite);
  }, 120_000);
  afterAll(async () => {
    await suite?.close();
  });
}

/**
 * What every browser test file starts with: its own database, a Basalt on it (with `env`),
 * whatever `setup` creates through the admin API, and the browser harness.
 */
export async function startBrowserSuite(
  options: { env?: Record<string, string>; setup?: (server: TestApp) => Promise<void> } = {},
): Promise<BrowserSuite> {
  const database = await createTestDatabase();
  const server = await startTestApp(database, options.env);
  let harness: BrowserHarness;
  try {
    await options.setup?.(server);
    harness = await startBrowserHarness();
  } catch (error) {
    await server.close();
    await database.drop();
    throw error;
  }
  return {
    server,
    browser: harness.browser,
    pageUrl: harness.pageUrl,
    async close() {
      await harness.close();
      await server.close();
      await database.drop();
    },
  };
}

/**
 * A page's view of a client's live queries, for code run in the page against the bundle's
 * `Basalt` global (the page has no module types of its own).
 */
export interface PageLiveQueries {
  db: {
    collection(name: string): {
      where(
        path: string,
        op: string,
        value: unknown,
      ): { onSnapshot(callback: (snapshot: { docs: Array<{ id: string }> }) => void): () => void };
    };
  };
}
