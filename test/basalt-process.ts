import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../server/internal/net.js';

const root = fileURLToPath(new URL('..', import.meta.url));

/** A log line of the server (pino JSON), as far as tests look at it. */
export interface LogLine {
  level?: number;
  msg?: string;
  [key: string]: unknown;
}

/**
 * A real Basalt server in a child process (`node --import tsx server/main.ts`, what
 * `npm start` runs), on an external database, with its output kept for the test to read.
 */
export class BasaltProcess {
  private stdout = '';
  private stderr = '';

  private constructor(
    readonly child: ChildProcess,
    readonly url: string,
    readonly serviceKey: string,
    readonly dataDir: string,
    private readonly env: Record<string, string>,
  ) {
    child.stdout?.on('data', (chunk: Buffer) => (this.stdout += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
  }

  /** Spawns the server; it is not ready yet (see ready()). `functions` are written into its functions folder. */
  static async spawn(env: Record<string, string>, functions: Record<string, string> = {}): Promise<BasaltProcess> {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'basalt-process-'));
    const functionsDir = path.join(dataDir, 'functions');
    await mkdir(functionsDir);
    for (const [file, source] of Object.entries(functions)) await writeFile(path.join(functionsDir, file), source);
    return BasaltProcess.start(env, await freePort(), `bsk_${randomBytes(32).toString('base64url')}`, dataDir);
  }

  /**
   * The same server again after stop({ keepData: true }): a new process on the same port,
   * service key, data folder and environment, so clients that knew the old one reconnect.
   */
  respawn(): BasaltProcess {
    return BasaltProcess.start(this.env, Number(new URL(this.url).port), this.serviceKey, this.dataDir);
  }

  private static start(env: Record<string, string>, port: number, serviceKey: string, dataDir: string): BasaltProcess {
    const functionsDir = path.join(dataDir, 'functions');
    const childEnv: NodeJS.ProcessEnv = { ...process.env };
    delete childEnv.NODE_OPTIONS;
    delete childEnv.DATABASE_URL;
    const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], {
      cwd: root,
      env: {
        ...childEnv,
        PORT: String(port),
        HOST: '127.0.0.1',
        BASALT_DATA_DIR: dataDir,
        BASALT_FUNCTIONS_DIR: functionsDir,
        BASALT_FUNCTIONS_WATCH: 'false',
        BASALT_SERVICE_KEY: serviceKey,
        LOG_LEVEL: 'info',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new BasaltProcess(child, `http://127.0.0.1:${port}`, serviceKey, dataDir, env);
  }

  /** Everything the process wrote to stdout (pino JSON lines) and stderr. */
  get output(): { stdout: string; stderr: string } {
    return { stdout: this.stdout, stderr: this.stderr };
  }

  /** The parsed log lines so far. */
  logLines(): LogLine[] {
    return this.stdout.split('\n').flatMap((line) => {
      try {
        return [JSON.parse(line) as LogLine];
      } catch {
        return [];
      }
    });
  }

  /** Waits until the server logs that it is ready; throws with its output if it exits first. */
  async ready(timeoutMs = 45_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.logLines().some((line) => line.msg?.startsWith('Basalt is ready'))) return;
      if (this.child.exitCode !== null) throw new Error(`Basalt exited early:\n${this.stdout}\n${this.stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`Basalt was not ready within ${timeoutMs} ms:\n${this.stdout}\n${this.stderr}`);
  }

  exited(): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve(this.child.exitCode);
    return new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  /** Ends the process (SIGTERM, then SIGKILL after 10 s); `keepData` leaves its folder for respawn(). */
  async stop(options: { keepData?: boolean } = {}): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
      await this.exited();
      clearTimeout(timer);
    }
    if (!options.keepData) await rm(this.dataDir, { recursive: true, force: true });
  }
}
