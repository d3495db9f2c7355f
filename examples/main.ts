/**
 * `npm run example`: runs the todo example against a Basalt started with `npm start`.
 * Builds the SDK when its build is missing or older than its sources, waits for Basalt,
 * sets up the example's collection and bucket with the service key, and serves the page.
 *
 *   BASALT_URL          Basalt's address (default http://HOST:PORT as `npm start` reads them, i.e. http://127.0.0.1:8080)
 *   BASALT_SERVICE_KEY  the service key (default: read from BASALT_DATA_DIR/service-key, as `npm start` writes it)
 *   EXAMPLE_HOST, EXAMPLE_PORT  where the page is served (default 127.0.0.1:5173)
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { exampleSettings, readServiceKey, SettingsError, type ExampleSettings } from './settings.js';
import { SetupError, setupExample } from './setup.js';
import { startExampleServer } from './server.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const sdkDir = path.join(repo, 'client-sdk');
const sdkBuild = path.join(sdkDir, 'dist', 'index.js');

function fail(message: string): never {
  process.stderr.write(`example: ${message}\n`);
  process.exit(1);
}

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestSource(full) : statSync(full).mtimeMs);
  }
  return newest;
}

/** Runs the SDK's own build (which also enforces its size budget) unless the build is current. */
function ensureSdkBuild(): void {
  if (existsSync(sdkBuild) && statSync(sdkBuild).mtimeMs >= newestSource(path.join(sdkDir, 'src'))) return;
  process.stdout.write('example: building the SDK (client-sdk/dist)\n');
  const result = spawnSync(process.execPath, [path.join(sdkDir, 'scripts', 'build.mjs')], {
    cwd: sdkDir,
    stdio: 'inherit',
  });
  if (result.status !== 0) fail('the SDK build failed');
}

async function waitForBasalt(basaltUrl: string): Promise<void> {
  // A first start creates the database cluster: give it time.
  const deadline = Date.now() + 300_000;
  let told = false;
  for (;;) {
    try {
      const response = await fetch(`${basaltUrl}/healthz`, { signal: AbortSignal.timeout(5_000) });
      if (response.ok) return;
    } catch {
      // Not up yet.
    }
    if (Date.now() > deadline) fail(`Basalt did not answer at ${basaltUrl}; start it with \`npm start\``);
    if (!told) {
      process.stdout.write(`example: waiting for Basalt at ${basaltUrl} (start it with \`npm start\`)\n`);
      told = true;
    }
    await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
}

async function main(): Promise<void> {
  let settings: ExampleSettings;
  try {
    // eslint-disable-next-line no-restricted-properties -- a command-line tool, not a server module
    settings = exampleSettings(process.env, process.cwd());
  } catch (error) {
    if (error instanceof SettingsError) fail(error.message);
    throw error;
  }
  ensureSdkBuild();
  const sdk = new Map<string, Buffer>([
    ['index.js', await readFile(sdkBuild)],
    ['index.js.map', await readFile(`${sdkBuild}.map`)],
  ]);
  await waitForBasalt(settings.basaltUrl);
  try {
    const serviceKey = await readServiceKey(settings);
    const result = await setupExample(settings.basaltUrl, serviceKey);
    process.stdout.write(
      `example: collection example_todos ${result.collection}, bucket example-images ${result.bucket}\n`,
    );
  } catch (error) {
    if (error instanceof SetupError || error instanceof SettingsError) fail(error.message);
    throw error;
  }
  const server = await startExampleServer({
    root: path.join(repo, 'examples', 'todo'),
    basaltUrl: settings.basaltUrl,
    sdk,
    host: settings.host,
    port: settings.port,
  }).catch((error: NodeJS.ErrnoException) =>
    fail(
      error.code === 'EADDRINUSE'
        ? `${settings.host}:${settings.port} is in use; pick another port with EXAMPLE_PORT`
        : String(error),
    ),
  );
  const shown = server.url.replace('://0.0.0.0:', '://127.0.0.1:');
  process.stdout.write(`example: the todo app is at ${shown} (talking to ${settings.basaltUrl}); Ctrl-C stops it\n`);
  const stop = (): void => {
    void server.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((error: unknown) => fail(error instanceof Error ? (error.stack ?? error.message) : String(error)));
