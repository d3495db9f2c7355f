import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { freePort } from '../server/internal/net.js';
import { request, useTestApp, waitFor } from './helpers.js';

/** The `basalt` command, spawned as a process against a running server. */
const root = fileURLToPath(new URL('..', import.meta.url));
const server = useTestApp();
/** The package's `bin`, as `npx basalt` runs it: every test goes through it. */
const bin = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { bin: { basalt: string } }).bin
  .basalt;
let work: string;

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'basalt-cli-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function basalt(args: string[], options: { stdin?: string; env?: Record<string, string | undefined> } = {}) {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    BASALT_URL: server.url,
    BASALT_SERVICE_KEY: server.serviceKey,
    ...options.env,
  };
  delete env.NODE_OPTIONS;
  for (const [key, value] of Object.entries(options.env ?? {})) if (value === undefined) delete env[key];
  const child = spawn(process.execPath, [path.join(root, bin), ...args], {
    cwd: work,
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdin.end(options.stdin ?? '');
  const done = new Promise<Ran>((resolve) => child.on('exit', (code) => resolve({ code, stdout, stderr })));
  return { child, done, output: () => stdout };
}

// Each test spawns the CLI several times: Node and tsx start slowly on a busy machine.
vi.setConfig({ testTimeout: 120_000 });

const run = (args: string[], options?: Parameters<typeof basalt>[1]) => basalt(args, options).done;

describe('basalt functions', () => {
  it('deploys a file and a folder, lists them, shows versions and rolls back', async () => {
    const file = path.join(work, 'hello.ts');
    await writeFile(file, `import { http } from 'basalt/functions';\nexport default http(async () => ({ v: 1 }));\n`);
    const first = await run(['functions', 'deploy', file]);
    expect(first).toMatchObject({ code: 0, stdout: 'deployed hello version 1 (http)\n' });
    await writeFile(file, `import { http } from 'basalt/functions';\nexport default http(async () => ({ v: 2 }));\n`);
    expect((await run(['functions', 'deploy', file])).stdout).toBe('deployed hello version 2 (http)\n');
    expect((await request(server.url, 'POST', '/v1/functions/hello', { body: {} })).body).toEqual({ v: 2 });

    const folder = path.join(work, 'greeter');
    await mkdir(path.join(folder, 'lib'), { recursive: true });
    await writeFile(
      path.join(folder, 'index.ts'),
      `import { http } from 'basalt/functions';\nimport { greet } from './lib/greet.js';\nexport default http(async () => greet());\n`,
    );
    await writeFile(path.join(folder, 'lib', 'greet.ts'), `export const greet = () => 'hi';\n`);
    expect((await run(['functions', 'deploy', folder])).stdout).toBe('deployed greeter version 1 (http)\n');
    expect((await request(server.url, 'POST', '/v1/functions/greeter', { body: {} })).body).toBe('hi');

    const list = await run(['functions', 'list']);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^greeter\tv1\thttp\tapi\t/m);
    expect(list.stdout).toMatch(/^hello\tv2\thttp\tapi\t/m);

    const rolled = await run(['functions', 'rollback', 'hello', '1']);
    expect(rolled).toMatchObject({ code: 0, stdout: 'hello is at version 1\n' });
    expect((await request(server.url, 'POST', '/v1/functions/hello', { body: {} })).body).toEqual({ v: 1 });
    expect((await run(['functions', 'versions', 'hello'])).stdout).toMatch(/^v1\tactive\tapi\t/m);

    const deleted = await run(['functions', 'delete', 'greeter']);
    expect(deleted).toMatchObject({ code: 0, stdout: 'undeployed greeter\n' });
  });

  it('refuses a broken deploy with exit code 4 and one line naming the file', async () => {
    const file = path.join(work, 'broken.ts');
    await writeFile(file, `import { http } from 'basalt/functions';\nexport default http(async () => {\n`);
    const broken = await run(['functions', 'deploy', file]);
    expect(broken.code).toBe(4);
    expect(broken.stdout).toBe('');
    expect(broken.stderr).toMatch(/^basalt: FUNCTION_BUILD_FAILED: broken\.ts: .+\n$/);
    expect(broken.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('prints the logs of recent invocations, then follows new ones', async () => {
    const file = path.join(work, 'chatty.ts');
    await writeFile(
      file,
      `import { http } from 'basalt/functions';\nexport default http(async (request) => { console.log('said', request.query.word); return 1; });\n`,
    );
    expect((await run(['functions', 'deploy', file])).code).toBe(0);
    await request(server.url, 'POST', '/v1/functions/chatty?word=first', { body: {} });
    const once = await run(['functions', 'logs', 'chatty', '--no-follow']);
    expect(once.code).toBe(0);
    expect(once.stdout).toMatch(/succeeded v1 http \d+ms /);
    expect(once.stdout).toContain('  [info] said first\n');

    const following = basalt(['functions', 'logs', 'chatty']);
    try {
      await waitFor('the first lines', () => following.output().includes('said first'), 10_000);
      await request(server.url, 'POST', '/v1/functions/chatty?word=second', { body: {} });
      await waitFor('the new invocation', () => following.output().includes('said second'), 10_000);
      expect(following.output().match(/said first/g)).toHaveLength(1);
    } finally {
      following.child.kill('SIGTERM');
      await following.done;
    }
  });
});

describe('basalt secrets', () => {
  it('sets a secret from stdin, lists names only, and deletes it', async () => {
    const set = await run(['secrets', 'set', 'STRIPE_KEY'], { stdin: 'sk_test_value\n' });
    expect(set).toMatchObject({ code: 0, stdout: 'set STRIPE_KEY\n' });
    const file = path.join(work, 'payer.ts');
    await writeFile(
      file,
      `import { http } from 'basalt/functions';\nexport default http({ secrets: ['STRIPE_KEY'] }, async (_r, ctx) => ctx.secrets.STRIPE_KEY);\n`,
    );
    await run(['functions', 'deploy', file]);
    expect((await request(server.url, 'POST', '/v1/functions/payer', { body: {} })).body).toBe('sk_test_value');

    const list = await run(['secrets', 'list']);
    expect(list.stdout).toMatch(/^STRIPE_KEY\t\d{4}-/m);
    expect(list.stdout).not.toContain('sk_test_value');
    const bad = await run(['secrets', 'set', 'lower-case'], { stdin: 'x' });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^basalt: INVALID_REQUEST: /);
    expect((await run(['secrets', 'delete', 'STRIPE_KEY'])).stdout).toBe('deleted STRIPE_KEY\n');
    expect((await run(['secrets', 'delete', 'STRIPE_KEY'])).code).toBe(1);
  });
});

describe('errors and exit codes', () => {
  it('says what is wrong in one line, with an exit code per kind of failure', async () => {
    const noKey = await run(['functions', 'list'], { env: { BASALT_SERVICE_KEY: undefined } });
    expect(noKey.code).toBe(3);
    expect(noKey.stderr).toBe('basalt: BASALT_SERVICE_KEY is not set (the service key of the server)\n');

    const port = await freePort();
    const unreachable = await run(['functions', 'list'], { env: { BASALT_URL: `http://127.0.0.1:${port}` } });
    expect(unreachable.code).toBe(3);
    expect(unreachable.stderr).toMatch(/^basalt: cannot reach http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)\n$/);

    const wrongKey = await run(['functions', 'list'], {
      env: { BASALT_SERVICE_KEY: 'bsk_wrong_wrong_wrong_wrong_wrong_wrong' },
    });
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toMatch(/^basalt: (UNAUTHENTICATED|FORBIDDEN): /);

    const unknown = await run(['functions', 'launch']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^basalt: unknown command: functions launch\n/);
    expect((await run(['functions', 'rollback', 'hello', 'x'])).code).toBe(2);
    expect((await run(['functions', 'deploy', path.join(work, 'missing.ts')])).code).toBe(2);
    const missingVersion = await run(['functions', 'rollback', 'hello', '99']);
    expect(missingVersion.code).toBe(1);
    expect(missingVersion.stderr).toMatch(/^basalt: NOT_FOUND: /);
  });
});

describe('the CLI in docs/functions.md', () => {
  const doc = readFileSync(path.join(root, 'docs', 'functions.md'), 'utf8');

  it('comes first in the page, before the folder, which is local development', () => {
    const cli = doc.indexOf('### The CLI');
    const api = doc.indexOf('### The admin API');
    const folder = doc.indexOf('## The functions folder (local development)');
    expect(cli).toBeGreaterThan(0);
    expect(cli).toBeLessThan(api);
    expect(api).toBeLessThan(folder);
    expect(doc.slice(folder)).toMatch(/When a folder file and an API deploy share a name/);
  });

  it('lists the exit codes the command uses, 0 to 4', () => {
    const rows = [...doc.matchAll(/^\| ([0-9]+) +\| (.+?) +\|$/gm)].map((match) => Number(match[1]));
    expect(rows).toEqual([0, 1, 2, 3, 4]);
  });
});
