import { log, measure, measureWith, type BenchFigures, type TargetFigures } from './documents.js';
import { round, runChained, type LoadRequest } from './load.js';
import { benchLine, machine } from './report.js';
import type { Settings } from './settings.js';
import { call, settle, startTarget, type RunningTarget } from './targets.js';

const PASSWORD = 'bench-Password-4711';
const JSON_HEADERS = { 'content-type': 'application/json' };

interface Session {
  access_token: string;
  refresh_token: string;
}

const emailOf = (i: number): string => `bench${i}@example.com`;

async function signIn(target: RunningTarget, i: number): Promise<Session> {
  const answer = (await call(target, 'POST', '/v1/auth/signin', { email: emailOf(i), password: PASSWORD }, {})) as {
    session: Session;
  };
  return answer.session;
}

/** Each connection signs in as a user of its own, again and again. */
function signInRequest(users: number): LoadRequest {
  let next = 0;
  return {
    method: 'POST',
    path: '/v1/auth/signin',
    headers: JSON_HEADERS,
    setupRequest: (request, context) => {
      context.user ??= next++ % users;
      return { ...request, body: JSON.stringify({ email: emailOf(context.user as number), password: PASSWORD }) };
    },
  };
}

/**
 * Each connection chains its own session: every refresh consumes the token it sends and the
 * answer carries the next. Each connection comes from its own loopback address, as users do.
 * A connection whose chain breaks (a failed call) takes a spare session rather than replaying
 * a rotated token, which would revoke the session family.
 */
function refreshLoad(target: RunningTarget, settings: Settings, tokens: string[], spares: string[]) {
  return (durationSeconds: number) =>
    runChained<string>({
      url: target.url,
      connections: settings.connections,
      durationSeconds,
      addressPerConnection: true,
      start: () => tokens.pop() ?? spares.pop() ?? null,
      request: (token) => ({
        method: 'POST',
        path: '/v1/auth/refresh',
        body: JSON.stringify({ refresh_token: token }),
      }),
      next: (status, body) =>
        status === 200 ? (JSON.parse(body) as { session: Session }).session.refresh_token : (spares.pop() ?? null),
    });
}

/** CPU of the server and its Postgres backends per successful request, in ms. */
function cpuPerRequest(figures: TargetFigures): number | null {
  if (figures.cpu_ms_per_req === undefined || figures.db_cpu_ms_per_req === undefined) return null;
  return round(figures.cpu_ms_per_req + figures.db_cpu_ms_per_req, 3);
}

/** The round of median throughput, with every round's req/s and CPU per request. */
function medianRound(rounds: TargetFigures[]): TargetFigures & { cpu_ms_per_req_rounds?: Array<number | null> } {
  const ok = rounds.filter((figures) => figures.rps !== undefined);
  if (ok.length === 0) return rounds[0] ?? { error: 'no run' };
  const sorted = [...ok].sort((a, b) => (a.rps ?? 0) - (b.rps ?? 0));
  const middle = sorted[Math.floor((sorted.length - 1) / 2)]!;
  if (rounds.length === 1) return middle;
  return {
    ...middle,
    rps_rounds: rounds.map((figures) => figures.rps ?? null),
    cpu_ms_per_req_rounds: rounds.map(cpuPerRequest),
  };
}

/** Times `verify` back to back, after a warm-up for the JIT. */
async function timeCalls(iterations: number, verify: () => Promise<unknown>) {
  for (let i = 0; i < Math.min(2_000, iterations); i++) await verify();
  const times = new Float64Array(iterations);
  const started = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) {
    const t0 = process.hrtime.bigint();
    await verify();
    times[i] = Number(process.hrtime.bigint() - t0) / 1e6;
  }
  const totalMs = Number(process.hrtime.bigint() - started) / 1e6;
  times.sort();
  const at = (p: number): number => times[Math.min(iterations - 1, Math.ceil((p / 100) * iterations) - 1)] ?? NaN;
  return {
    mean_ms: round(totalMs / iterations, 4),
    p50_ms: round(at(50), 4),
    p99_ms: round(at(99), 4),
    per_s: round(iterations / (totalMs / 1000), 0),
    iterations,
  };
}

/**
 * The in-process cost of verifying an access token: the auth module's verifier (what every
 * request with a bearer token runs), called back to back on one token. Built from the same
 * configuration and database as the running server, so keys and issuer match; only the auth
 * module starts.
 */
async function verifyCost(target: RunningTarget, token: string, iterations: number) {
  const { buildApp } = await import('../server/app.js');
  const { loadConfig } = await import('../server/config.js');
  const { createLogger } = await import('../server/internal/log.js');
  const { buildAuthModule } = await import('../server/modules/auth/module.js');
  const config = loadConfig({ ...target.env, BASALT_ROLES: 'api', LOG_LEVEL: 'silent' });
  const app = await buildApp(
    { ...config, databaseUrl: config.databaseUrl ?? '', serviceKey: target.serviceKey ?? '' },
    { logger: createLogger('silent', { pretty: false }) },
  );
  const auth = buildAuthModule(app.platform);
  try {
    await auth.start();
    return await timeCalls(iterations, () => auth.verifier.verify(token));
  } finally {
    await auth.stop();
    await app.close();
  }
}

/**
 * The floor: jose's ES256 signature check alone, with the key from the server's JWKS and no
 * claim checks or revocation lookup. What Basalt's verifier adds on top is its own cost.
 */
async function joseFloor(target: RunningTarget, token: string, iterations: number) {
  const { importJWK, jwtVerify, decodeProtectedHeader } = await import('jose');
  const { keys } = (await call(target, 'GET', '/.well-known/jwks.json', undefined, {})) as {
    keys: Array<{ kid?: string; alg?: string }>;
  };
  const { kid } = decodeProtectedHeader(token);
  const jwk = keys.find((key) => key.kid === kid);
  if (!jwk) throw new Error("the token's key is not in the JWKS");
  const key = await importJWK(jwk, jwk.alg ?? 'ES256');
  return timeCalls(iterations, () => jwtVerify(token, key));
}

/** Parse's /login beside Basalt's sign-in (Parse has no refresh tokens to compare). */
async function parseSignIn(settings: Settings): Promise<BenchFigures['parse']> {
  const target = await startTarget('parse', settings);
  try {
    for (let i = 0; i < settings.connections; i++) {
      await call(target, 'POST', '/parse/users', { username: emailOf(i), password: PASSWORD });
    }
    await settle(target.server, 10);
    let next = 0;
    return await measure(
      target,
      {
        method: 'POST',
        path: '/parse/login',
        headers: { ...JSON_HEADERS, 'x-parse-revocable-session': '1' },
        setupRequest: (request, context) => {
          context.user ??= next++ % settings.connections;
          return {
            ...request,
            body: JSON.stringify({ username: emailOf(context.user as number), password: PASSWORD }),
          };
        },
      },
      settings,
      { 'x-parse-application-id': 'bench' },
    );
  } finally {
    await target.close();
  }
}

export async function runAuth(settings: Settings): Promise<string[]> {
  // BENCH_ONLY=refresh (or signin, verify, comma-separated) runs only those benchmarks.
  const wanted = (bench: 'signin' | 'refresh' | 'verify'): boolean => !settings.only || settings.only.includes(bench);
  const lines: string[] = [];
  const signin: BenchFigures = {};
  const refresh: BenchFigures = {};
  let verify: Record<string, unknown> = {};
  if (settings.targets.includes('basalt')) {
    let target: RunningTarget | null = null;
    try {
      log('basalt: starting for auth');
      target = await startTarget('basalt', settings);
      const users = settings.connections;
      log(`basalt: signing up ${users} users`);
      for (let i = 0; i < users; i++) {
        await call(target, 'POST', '/v1/auth/signup', { email: emailOf(i), password: PASSWORD }, {});
      }
      await settle(target.server, 10);
      if (wanted('signin')) {
        log(`basalt: auth.signin for ${settings.durationSeconds} s`);
        signin.basalt = await measure(target, signInRequest(users), settings, {});
      }

      if (wanted('refresh')) {
        // BENCH_ROUNDS runs of refresh, each on fresh sessions: the median-throughput round is
        // reported, with every round's req/s and CPU per refresh beside it.
        const rounds: TargetFigures[] = [];
        for (let round = 0; round < settings.rounds; round++) {
          // Sessions to chain: one per connection for the warm-up and one for the run, plus spares.
          log('basalt: opening sessions for refresh');
          const sessions: string[] = [];
          for (let i = 0; i < settings.connections * 3; i++) {
            sessions.push((await signIn(target, i % users)).refresh_token);
          }
          const spares = sessions.splice(0, settings.connections);
          await settle(target.server, 10);
          log(`basalt: auth.refresh for ${settings.durationSeconds} s (round ${round + 1}/${settings.rounds})`);
          rounds.push(await measureWith(target, settings, refreshLoad(target, settings, sessions, spares)));
        }
        refresh.basalt = medianRound(rounds);
      }
      if (wanted('verify')) {
        const token = (await signIn(target, 0)).access_token;
        log('basalt: token verification, over HTTP and in-process');
        const plain = await measure(target, { method: 'GET', path: '/healthz' }, settings, {});
        const authed = await measure(target, { method: 'GET', path: '/healthz' }, settings, {
          authorization: `Bearer ${token}`,
        });
        // The server's CPU time per request with and without a token; the difference is what
        // resolving the caller from an access token adds to every request, HTTP included.
        const withToken = authed.cpu_ms_per_req ?? null;
        const withoutToken = plain.cpu_ms_per_req ?? null;
        verify = {
          in_process: await verifyCost(target, token, settings.verifyIterations),
          jose_es256_floor: await joseFloor(target, token, settings.verifyIterations),
          http: {
            healthz_without_token: plain,
            healthz_with_token: authed,
            added_cpu_ms_per_request:
              withToken === null || withoutToken === null ? null : round(withToken - withoutToken, 4),
          },
        };
      }
    } catch (error) {
      const message = (error as Error).message.split('\n')[0] ?? 'failed';
      log(`basalt: ${(error as Error).message}`);
      signin.basalt ??= { error: message };
      refresh.basalt ??= { error: message };
      verify = { error: message };
    } finally {
      await target?.close();
    }
  }
  if (settings.targets.includes('parse') && wanted('signin')) {
    try {
      log('parse: /login');
      signin.parse = await parseSignIn(settings);
    } catch (error) {
      signin.parse = { error: (error as Error).message.split('\n')[0] ?? 'failed' };
    }
  }
  if (wanted('signin')) lines.push(benchLine('auth.signin', signin, settings, { users: settings.connections }));
  if (wanted('refresh')) lines.push(benchLine('auth.refresh', refresh, settings));
  if (!wanted('verify')) return lines;
  const inProcess = verify.in_process as { mean_ms?: number } | undefined;
  lines.push(
    JSON.stringify({
      bench: 'auth.verify',
      basalt: verify,
      connections: settings.connections,
      duration_s: settings.durationSeconds,
      goal: { mean_ms_below: 0.1 },
      met: inProcess?.mean_ms === undefined ? null : inProcess.mean_ms < 0.1,
      date: new Date().toISOString(),
      machine,
    }),
  );
  return lines;
}
