/** What `npm run example` reads from its environment (see examples/main.ts and docs/examples.md). */
import { readFile } from 'node:fs/promises';
import path from 'node:path';

export interface ExampleSettings {
  /** Where Basalt is, without a trailing slash. */
  basaltUrl: string;
  /** BASALT_SERVICE_KEY when set. */
  serviceKey: string | null;
  /** Else the key is read from here: the file `npm start` generates in its data dir. */
  serviceKeyFile: string;
  host: string;
  port: number;
}

export class SettingsError extends Error {
  override name = 'SettingsError';
}

/**
 * Defaults pair with `npm start`: the same HOST, PORT and BASALT_DATA_DIR find the same
 * server and its service key, so `PORT=9090 npm start` goes with `PORT=9090 npm run example`.
 */
export function exampleSettings(env: Record<string, string | undefined>, cwd: string): ExampleSettings {
  // A server listening on every interface is reached on loopback.
  const listenHost = !env.HOST || env.HOST === '0.0.0.0' || env.HOST === '::' ? '127.0.0.1' : env.HOST;
  const basaltHost = listenHost.includes(':') ? `[${listenHost}]` : listenHost;
  const basaltUrl = (env.BASALT_URL || `http://${basaltHost}:${env.PORT || '8080'}`).replace(/\/+$/, '');
  let parsed: URL;
  try {
    parsed = new URL(basaltUrl);
  } catch {
    throw new SettingsError(`BASALT_URL is not a URL: ${basaltUrl}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
    throw new SettingsError(`BASALT_URL must be an http or https URL: ${basaltUrl}`);
  const port = Number(env.EXAMPLE_PORT || 5173);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new SettingsError(`EXAMPLE_PORT is not a port: ${env.EXAMPLE_PORT}`);
  return {
    basaltUrl,
    serviceKey: env.BASALT_SERVICE_KEY?.trim() || null,
    serviceKeyFile: path.resolve(cwd, env.BASALT_DATA_DIR || '.basalt', 'service-key'),
    host: env.EXAMPLE_HOST || '127.0.0.1',
    port,
  };
}

/** The key from the environment, else the one `npm start` generated into its data dir. */
export async function readServiceKey(settings: ExampleSettings): Promise<string> {
  if (settings.serviceKey) return settings.serviceKey;
  let key = '';
  try {
    key = (await readFile(settings.serviceKeyFile, 'utf8')).trim();
  } catch {
    // Reported below.
  }
  if (!key)
    throw new SettingsError(
      `no service key: set BASALT_SERVICE_KEY, or run this in the folder where \`npm start\` runs ` +
        `(it keeps the key in ${settings.serviceKeyFile}; BASALT_DATA_DIR moves it)`,
    );
  return key;
}
