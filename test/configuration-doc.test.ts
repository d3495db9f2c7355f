import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../server/config.js';

/**
 * docs/configuration.md must list every environment variable the server reads, and
 * nothing it does not: the variables are taken from what `loadConfig` actually reads and
 * from the names written in server/config.ts, and compared with the doc's tables.
 */

const ROOT = path.resolve(import.meta.dirname, '..');
/** Stands for the `<NAME>` of OAuth provider variables while `loadConfig` runs. */
const PROVIDER = 'DOCCHECK';

function normalise(name: string): string {
  return name.replace(`BASALT_OAUTH_${PROVIDER}_`, 'BASALT_OAUTH_<NAME>_');
}

/** Every variable `loadConfig` looks up, recorded as it runs over a minimal environment. */
function variablesReadByLoadConfig(): Set<string> {
  const read = new Set<string>();
  const base: Record<string, string> = {
    // A GitHub provider reaches every provider variable, Enterprise URLs included.
    [`BASALT_OAUTH_${PROVIDER}_CLIENT_ID`]: 'client',
    [`BASALT_OAUTH_${PROVIDER}_CLIENT_SECRET`]: 'secret',
    [`BASALT_OAUTH_${PROVIDER}_TYPE`]: 'github',
  };
  const env = new Proxy(base, {
    get(target, key) {
      if (typeof key === 'string') read.add(normalise(key));
      return target[key as string];
    },
  });
  loadConfig(env);
  return read;
}

/** Names written as string literals in server/config.ts, provider suffixes included. */
async function variablesNamedInConfigSource(): Promise<Set<string>> {
  const source = await readFile(path.join(ROOT, 'server/config.ts'), 'utf8');
  const names = new Set<string>();
  for (const match of source.matchAll(/'([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|PORT|HOST)'/g)) names.add(match[1] as string);
  for (const match of source.matchAll(/`\$\{prefix\}(_[A-Z0-9_]+)`/g)) names.add(`BASALT_OAUTH_<NAME>${match[1]}`);
  return names;
}

/** Every backticked variable name in the first column of the doc's tables. */
async function variablesInDoc(): Promise<Set<string>> {
  const doc = await readFile(path.join(ROOT, 'docs/configuration.md'), 'utf8');
  const names = new Set<string>();
  for (const line of doc.split('\n')) {
    if (!line.startsWith('|')) continue;
    const firstCell = line.split('|')[1] ?? '';
    for (const match of firstCell.matchAll(/`([A-Z][A-Z0-9_]*(?:<NAME>[A-Z0-9_]*)?)`/g)) names.add(match[1] as string);
  }
  return names;
}

async function typeScriptFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => path.join(entry.parentPath, entry.name));
}

describe('docs/configuration.md', () => {
  it('names every variable loadConfig reads, and only those', async () => {
    const read = variablesReadByLoadConfig();
    const named = await variablesNamedInConfigSource();
    // The source scan and the recorded reads agree, so neither can hide a variable.
    expect([...named].sort()).toEqual([...read].sort());
    const documented = await variablesInDoc();
    const missingFromDoc = [...read].filter((name) => !documented.has(name)).sort();
    const notRead = [...documented].filter((name) => !read.has(name)).sort();
    expect({ missingFromDoc, notRead }).toEqual({ missingFromDoc: [], notRead: [] });
  });

  it('server/config.ts is the only module that reads the environment', async () => {
    const readers: string[] = [];
    for (const file of await typeScriptFiles(path.join(ROOT, 'server'))) {
      if (file.endsWith(path.join('server', 'config.ts'))) continue;
      if (/\bprocess\.env\b/.test(await readFile(file, 'utf8'))) readers.push(path.relative(ROOT, file));
    }
    expect(readers).toEqual([]);
  });
});
