/**
 * `basalt` — the command line of a running Basalt server's admin API: deploy functions,
 * follow their logs, roll back, and manage secrets. Reads BASALT_URL and BASALT_SERVICE_KEY.
 * Exit codes (docs/functions.md#the-cli): 0 done, 1 the server refused, 2 bad usage,
 * 3 no server or no key, 4 the deploy does not build.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';

const EXIT = { ok: 0, refused: 1, usage: 2, unreachable: 3, buildFailed: 4 } as const;

class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

const USAGE = `usage: basalt <command>

  functions deploy <file|dir>... [--name NAME]   deploy (a file: named after it; a dir: its files, entry index.*)
  functions list                                 deployed functions and their live versions
  functions versions <name>                      every version of a function
  functions logs <name> [--no-follow] [--limit N] recent invocations, then new ones as they come
  functions rollback <name> <version>            make an earlier version live again
  functions delete <name>                        undeploy (queued events are dead-lettered)
  secrets set <NAME>                             set a secret; the value is read from stdin
  secrets list                                   secret names (values never leave the server)
  secrets delete <NAME>                          delete a secret

environment: BASALT_URL (default http://127.0.0.1:8080), BASALT_SERVICE_KEY (required)`;

interface ApiError {
  error?: { code?: string; message?: string; details?: Record<string, unknown> };
}

function settings(): { url: string; key: string } {
  const url = (process.env.BASALT_URL ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
  const key = process.env.BASALT_SERVICE_KEY;
  if (!key) throw new CliError('BASALT_SERVICE_KEY is not set (the service key of the server)', EXIT.unreachable);
  return { url, key };
}

async function api<T>(method: string, urlPath: string, body?: unknown): Promise<T> {
  const { url, key } = settings();
  let response: Response;
  try {
    response = await fetch(`${url}${urlPath}`, {
      method,
      headers: {
        authorization: `Bearer ${key}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    const reason = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message;
    throw new CliError(`cannot reach ${url} (${reason})`, EXIT.unreachable);
  }
  const text = await response.text();
  const parsed = text ? (JSON.parse(text) as unknown) : null;
  if (!response.ok) {
    const failure = (parsed as ApiError | null)?.error;
    const code = failure?.code ?? `HTTP_${response.status}`;
    const details = failure?.details ?? {};
    const where = typeof details.file === 'string' ? `${details.file}: ` : '';
    const reason = typeof details.reason === 'string' ? details.reason : (failure?.message ?? response.statusText);
    throw new CliError(
      `${code}: ${where}${reason}`,
      code === 'FUNCTION_BUILD_FAILED' ? EXIT.buildFailed : EXIT.refused,
    );
  }
  return parsed as T;
}

const SOURCE = /\.(ts|mts|cts|js|mjs|cjs|json)$/;
const ENTRY_NAMES = ['index.ts', 'index.mts', 'index.js', 'index.mjs'];

/** Every source file under `dir` (not node_modules, not hidden), as deploy paths. */
async function sourcesOf(dir: string, prefix = ''): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.name.startsWith('.') || entry.name === 'node_modules') continue;
    const full = path.join(dir, entry.name);
    const name = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) Object.assign(files, await sourcesOf(full, name));
    else if (entry.isFile() && SOURCE.test(entry.name)) files[name] = await readFile(full, 'utf8');
  }
  return files;
}

async function deployTarget(target: string, name?: string): Promise<void> {
  let info;
  try {
    info = await stat(target);
  } catch {
    throw new CliError(`no such file or folder: ${target}`, EXIT.usage);
  }
  let files: Record<string, string>;
  let entry: string;
  let functionName: string;
  if (info.isDirectory()) {
    files = await sourcesOf(target);
    const dirName = path.basename(path.resolve(target));
    const found = [...ENTRY_NAMES, `${dirName}.ts`, `${dirName}.js`].find((candidate) => candidate in files);
    if (!found) throw new CliError(`${target} has no index.ts or index.js to start from`, EXIT.usage);
    entry = found;
    functionName = name ?? dirName;
  } else {
    entry = path.basename(target);
    files = { [entry]: await readFile(target, 'utf8') };
    functionName = name ?? entry.replace(/\.[^.]+$/, '');
  }
  const deployed = await api<{ name: string; version: number; kind: string }>(
    'PUT',
    `/v1/admin/functions/${encodeURIComponent(functionName)}`,
    { files, entry },
  );
  process.stdout.write(`deployed ${deployed.name} version ${deployed.version} (${deployed.kind})\n`);
}

interface Invocation {
  id: string;
  status: string;
  trigger: string;
  version: number | null;
  duration_ms: number | null;
  error: string | null;
  logs: Array<{ level: string; message: string; at: string }>;
  created_at: string;
}

function printInvocation(invocation: Invocation): void {
  const version = invocation.version === null ? '' : ` v${invocation.version}`;
  const duration = invocation.duration_ms === null ? '' : ` ${invocation.duration_ms}ms`;
  process.stdout.write(
    `${invocation.created_at} ${invocation.status}${version} ${invocation.trigger}${duration} ${invocation.id}\n`,
  );
  for (const line of invocation.logs) process.stdout.write(`  [${line.level}] ${line.message}\n`);
  if (invocation.error) process.stdout.write(`  error: ${invocation.error}\n`);
}

async function logs(name: string, follow: boolean, limit: number): Promise<void> {
  const path_ = `/v1/admin/functions/${encodeURIComponent(name)}/invocations?limit=${limit}`;
  const seen = new Set<string>();
  const show = async () => {
    const { invocations } = await api<{ invocations: Invocation[] }>('GET', path_);
    // Newest first from the API: printed oldest first, each once.
    for (const invocation of invocations.reverse()) {
      if (seen.has(invocation.id)) continue;
      seen.add(invocation.id);
      printInvocation(invocation);
    }
  };
  await show();
  if (!follow) return;
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    await show();
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  // One trailing newline is the shell's (echo, a here-string), not the secret's.
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

function option(args: string[], flag: string): string | undefined {
  const at = args.indexOf(flag);
  if (at === -1) return undefined;
  const value = args[at + 1];
  if (value === undefined) throw new CliError(`${flag} needs a value`, EXIT.usage);
  args.splice(at, 2);
  return value;
}

function flag(args: string[], name: string): boolean {
  const at = args.indexOf(name);
  if (at === -1) return false;
  args.splice(at, 1);
  return true;
}

function one(args: string[], what: string): string {
  if (args.length !== 1 || !args[0]) throw new CliError(`expected ${what}\n${USAGE}`, EXIT.usage);
  return args[0];
}

async function main(argv: string[]): Promise<void> {
  const [group, command, ...args] = argv;
  if (group === undefined || group === 'help' || group === '--help' || group === '-h') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (group === 'functions') {
    switch (command) {
      case 'deploy': {
        const name = option(args, '--name');
        if (args.length === 0) throw new CliError(`expected a file or folder to deploy\n${USAGE}`, EXIT.usage);
        if (name && args.length > 1) throw new CliError('--name takes one file or folder', EXIT.usage);
        for (const target of args) await deployTarget(target, name);
        return;
      }
      case 'list': {
        const { functions } = await api<{
          functions: Array<{ name: string; version: number; kind: string; source: string; deployed_at: string }>;
        }>('GET', '/v1/admin/functions');
        for (const fn of functions) {
          process.stdout.write(`${fn.name}\tv${fn.version}\t${fn.kind}\t${fn.source}\t${fn.deployed_at}\n`);
        }
        return;
      }
      case 'versions': {
        const name = one(args, 'a function name');
        const { versions } = await api<{
          versions: Array<{ version: number; active: boolean; source: string; deployed_at: string }>;
        }>('GET', `/v1/admin/functions/${encodeURIComponent(name)}/versions`);
        for (const version of versions) {
          process.stdout.write(
            `v${version.version}\t${version.active ? 'active' : ''}\t${version.source}\t${version.deployed_at}\n`,
          );
        }
        return;
      }
      case 'logs': {
        const follow = !flag(args, '--no-follow');
        const limitText = option(args, '--limit') ?? '20';
        const limit = Number(limitText);
        if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
          throw new CliError('--limit must be an integer from 1 to 1000', EXIT.usage);
        }
        await logs(one(args, 'a function name'), follow, limit);
        return;
      }
      case 'rollback': {
        const [name, versionText] = args;
        const version = Number(versionText);
        if (!name || args.length !== 2 || !Number.isInteger(version) || version < 1) {
          throw new CliError(`expected a function name and a version number\n${USAGE}`, EXIT.usage);
        }
        const live = await api<{ name: string; version: number }>(
          'POST',
          `/v1/admin/functions/${encodeURIComponent(name)}/rollback`,
          { version },
        );
        process.stdout.write(`${live.name} is at version ${live.version}\n`);
        return;
      }
      case 'delete': {
        const name = one(args, 'a function name');
        await api('DELETE', `/v1/admin/functions/${encodeURIComponent(name)}`);
        process.stdout.write(`undeployed ${name}\n`);
        return;
      }
    }
  }
  if (group === 'secrets') {
    switch (command) {
      case 'set': {
        const name = one(args, 'a secret name');
        if (process.stdin.isTTY) process.stderr.write(`value of ${name} (end with Ctrl-D): `);
        const value = await readStdin();
        await api('PUT', `/v1/admin/secrets/${encodeURIComponent(name)}`, { value });
        process.stdout.write(`set ${name}\n`);
        return;
      }
      case 'list': {
        const { secrets } = await api<{ secrets: Array<{ name: string; updated_at: string }> }>(
          'GET',
          '/v1/admin/secrets',
        );
        for (const secret of secrets) process.stdout.write(`${secret.name}\t${secret.updated_at}\n`);
        return;
      }
      case 'delete': {
        const name = one(args, 'a secret name');
        await api('DELETE', `/v1/admin/secrets/${encodeURIComponent(name)}`);
        process.stdout.write(`deleted ${name}\n`);
        return;
      }
    }
  }
  throw new CliError(`unknown command: ${argv.slice(0, 2).join(' ')}\n${USAGE}`, EXIT.usage);
}

main(process.argv.slice(2)).then(
  () => process.exit(EXIT.ok),
  (error: unknown) => {
    if (error instanceof CliError) {
      process.stderr.write(`basalt: ${error.message}\n`);
      process.exit(error.exitCode);
    }
    process.stderr.write(`basalt: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(EXIT.refused);
  },
);
