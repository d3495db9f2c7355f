/**
 * The security suite's table runner. Each surface (auth, documents, realtime, storage, admin)
 * has one file holding one table of attacks; an outside review adds rows, not files.
 *
 * A row is either a plain HTTP attack — a request and what the server must answer — or a
 * scenario with its own steps (races, websockets, multi-step takeovers) that asserts inside
 * `run`. Every row runs against a real server on a real Postgres, started once per file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, errorCode, request, startTestApp, type TestApp, type TestDatabase } from '../helpers.js';

export interface HttpResult {
  status: number;
  headers: Headers;
  body: unknown;
  text: string;
}

/** What a row's request is sent as: a plain string names a token in the fixture. */
export type Actor = 'anonymous' | 'service' | string;

export interface HttpAttack<F> {
  /** What the attacker tries, in one line. */
  name: string;
  /** Where the attack comes from, e.g. a review item ("review-2025 #2"); free text. */
  source?: string;
  /** Builds the request from the fixture, so rows can name ids the fixture created. */
  request: (fixture: F) => {
    method: string;
    path: string;
    as?: Actor;
    body?: unknown;
    rawBody?: string | Uint8Array<ArrayBuffer>;
    headers?: Record<string, string>;
  };
  /** The status the server must answer. */
  status: number;
  /** The catalogue code the error body must carry (omit for success rows). */
  code?: string;
  /** Strings that must not appear anywhere in the response (leaked secrets, stack traces). */
  mustNotContain?: (fixture: F) => string[];
  /** Further checks on the answer or on the state afterwards. */
  check?: (result: HttpResult, fixture: F, server: TestApp) => void | Promise<void>;
}

export interface ScenarioAttack<F> {
  name: string;
  source?: string;
  /** Runs the attack and asserts with `expect`; fails the row on any violation. */
  run: (fixture: F, server: TestApp) => Promise<void>;
}

export type Attack<F> = HttpAttack<F> | ScenarioAttack<F>;

export interface SecuritySurface<F> {
  /** The surface's name, e.g. "documents". */
  surface: string;
  /** Server environment for this surface (as the process environment would be). */
  env?: Record<string, string>;
  /** Creates users, collections, buckets … that the rows refer to. */
  setup: (server: TestApp) => Promise<F>;
  /** Resolves an actor name to a bearer token (service key and anonymous are built in). */
  tokenOf?: (fixture: F, actor: string) => string | undefined;
  attacks: Array<Attack<F>>;
}

/** Registers one `describe` with one test per attack, sharing one server and fixture. */
export function securitySuite<F>(definition: SecuritySurface<F>): void {
  describe(`security: ${definition.surface}`, () => {
    let database: TestDatabase;
    let server: TestApp;
    let fixture: F;

    beforeAll(async () => {
      database = await createTestDatabase();
      server = await startTestApp(database, definition.env ?? {});
      fixture = await definition.setup(server);
    });

    afterAll(async () => {
      await server?.close();
      await database?.drop();
    });

    for (const attack of definition.attacks) {
      const label = attack.source ? `${attack.name} [${attack.source}]` : attack.name;
      it(label, async () => {
        if ('run' in attack) {
          await attack.run(fixture, server);
          return;
        }
        const spec = attack.request(fixture);
        let token: string | undefined;
        if (spec.as === 'service') token = server.serviceKey;
        else if (spec.as && spec.as !== 'anonymous') {
          token = definition.tokenOf?.(fixture, spec.as);
          if (!token) throw new Error(`the fixture has no token for actor "${spec.as}"`);
        }
        const result = await request(server.url, spec.method, spec.path, {
          body: spec.body,
          rawBody: spec.rawBody,
          headers: spec.headers,
          token,
        });
        expect(result.status, `${spec.method} ${spec.path} → ${result.text.slice(0, 500)}`).toBe(attack.status);
        if (attack.code !== undefined) expect(errorCode(result.body)).toBe(attack.code);
        for (const secret of attack.mustNotContain?.(fixture) ?? []) {
          expect(result.text).not.toContain(secret);
        }
        await attack.check?.(result, fixture, server);
        // The server keeps serving after every attack.
        const health = await request(server.url, 'GET', '/healthz');
        expect(health.status).toBe(200);
      });
    }
  });
}
