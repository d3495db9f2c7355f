import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** A server under test, in a process of its own so its CPU is its own and measured alone. */
export interface ServerProcess {
  name: string;
  url: string;
  child: ChildProcess;
  /** CPU seconds (user + system) the process has used so far. */
  cpuSeconds(): number;
  /** Output kept for the error message if the process dies. */
  output(): string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

const CLOCK_TICKS_PER_SECOND = 100;

/** CPU seconds (user + system) a process has used, from /proc; NaN when it cannot be read. */
export function cpuSecondsOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces; fields after its closing parenthesis are fixed.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return (utime + stime) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return Number.NaN;
  }
}

/** CPU seconds used so far by a server process and by each of its database's backends. */
export interface CpuSnapshot {
  server: number;
  postgres: Map<number, number>;
}

export async function cpuSnapshot(
  server: ServerProcess,
  db: { backendPids(): Promise<number[]> },
): Promise<CpuSnapshot> {
  const postgres = new Map<number, number>();
  for (const pid of await db.backendPids()) postgres.set(pid, cpuSecondsOf(pid));
  return { server: server.cpuSeconds(), postgres };
}

/** CPU seconds used between two snapshots; a backend that started meanwhile counts whole. */
export function cpuSpent(before: CpuSnapshot, after: CpuSnapshot): { server: number; postgres: number } {
  let postgres = 0;
  for (const [pid, seconds] of after.postgres) {
    if (Number.isFinite(seconds)) postgres += seconds - (before.postgres.get(pid) ?? 0);
  }
  return { server: after.server - before.server, postgres };
}

export interface SpawnOptions {
  name: string;
  command: string;
  args: string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
  url: string;
  /** A path on `url` that answers 2xx once the server is ready. */
  readyPath: string;
  readyTimeoutMs?: number;
}

/** A child process whose output is kept (its tail) and that stops as a supervisor would stop it. */
export interface Spawned {
  child: ChildProcess;
  /** The last `keepBytes` of stdout and stderr together. */
  output(): string;
  exited(): boolean;
  /** Called with the output so far after each chunk. */
  onOutput(listener: (output: string) => void): void;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it exited. */
  stop(): Promise<void>;
}

export function spawnKept(
  command: string,
  args: string[],
  options: { cwd: string; env: NodeJS.ProcessEnv; keepBytes?: number; graceMs?: number },
): Spawned {
  const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] });
  const keepBytes = options.keepBytes ?? 8_000;
  let output = '';
  let exited = false;
  const listeners: Array<(output: string) => void> = [];
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-keepBytes);
    for (const listener of listeners) listener(output);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exit = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      resolve();
    }),
  );
  return {
    child,
    output: () => output,
    exited: () => exited,
    onOutput: (listener) => listeners.push(listener),
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), options.graceMs ?? 10_000);
      await exit;
      clearTimeout(timer);
    },
  };
}

export async function startServer(options: SpawnOptions): Promise<ServerProcess> {
  const { child, output, exited, stop } = spawnKept(options.command, options.args, {
    cwd: options.cwd,
    env: options.env,
  });

  const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000);
  for (;;) {
    if (exited()) throw new Error(`${options.name} exited during start:\n${output()}`);
    try {
      const response = await fetch(options.url + options.readyPath);
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${options.name} was not ready within ${options.readyTimeoutMs ?? 60_000} ms:\n${output()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }

  return {
    name: options.name,
    url: options.url,
    child,
    cpuSeconds: () => (child.pid === undefined ? Number.NaN : cpuSecondsOf(child.pid)),
    output,
    stop,
  };
}
