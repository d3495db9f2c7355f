import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { SMTPServer } from 'smtp-server';
import type { AuthResponse, Session, User } from '../client-sdk/src/wire.js';
import { afterAll, beforeAll } from 'vitest';
import { request, waitFor } from './helpers.js';

/** The wire contract's shapes, as the tests read answers. */
export type SessionBody = Session;
export type UserBody = User;
export type AuthBody = AuthResponse;

export const STRONG_PASSWORD = 'correct horse battery staple 42';

export function uniqueEmail(prefix = 'user'): string {
  return `${prefix}-${randomBytes(4).toString('hex')}@example.com`;
}

/** A signed-up user: the answer, with the user's id and access token at hand for acting as them. */
export interface SignedUp extends AuthBody {
  id: string;
  email: string;
  /** The session's access token; '' when sign-up starts no session (email confirmation on). */
  token: string;
}

/** The one sign-up of the tests: a new user by email and password; fails unless created. */
export async function signUp(baseUrl: string, email = uniqueEmail(), password = STRONG_PASSWORD): Promise<SignedUp> {
  const response = await request(baseUrl, 'POST', '/v1/auth/signup', { body: { email, password } });
  if (response.status !== 201) throw new Error(`sign-up failed: ${response.status} ${response.text}`);
  const body = response.body as AuthBody;
  return { ...body, id: body.user.id, email: body.user.email ?? email, token: body.session?.access_token ?? '' };
}

export async function signIn(baseUrl: string, email: string, password = STRONG_PASSWORD): Promise<AuthBody> {
  const response = await request(baseUrl, 'POST', '/v1/auth/signin', { body: { email, password } });
  if (response.status !== 200) throw new Error(`sign-in failed: ${response.status} ${response.text}`);
  return response.body as AuthBody;
}

/** A new user signed in twice, as on two devices: the account and its two sessions (not the sign-up's). */
export async function twoSessions(baseUrl: string): Promise<{ user: SignedUp; a: SessionBody; b: SessionBody }> {
  const user = await signUp(baseUrl);
  const a = (await signIn(baseUrl, user.email)).session!;
  const b = (await signIn(baseUrl, user.email)).session!;
  return { user, a, b };
}

/** A JSON request from a chosen loopback address, to act as another client IP. */
export function requestFrom(
  localAddress: string,
  baseUrl: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: unknown }> {
  const url = new URL(path, baseUrl);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        method,
        localAddress,
        headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed });
        });
      },
    );
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}

export interface ReceivedMail {
  to: string[];
  raw: string;
  /** The body with quoted-printable soft breaks undone, for finding links and codes. */
  text: string;
}

/** A real SMTP server on a free loopback port that keeps every mail it receives. */
export async function startMailServer(): Promise<{
  url: string;
  mails: ReceivedMail[];
  waitFor(predicate: (mail: ReceivedMail) => boolean, timeoutMs?: number): Promise<ReceivedMail>;
  close(): Promise<void>;
}> {
  const mails: ReceivedMail[] = [];
  const server = new SMTPServer({
    secure: false,
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const text = raw.replace(/=\r?\n/g, '').replace(/=3D/g, '=');
        mails.push({ to: session.envelope.rcptTo.map((rcpt) => rcpt.address), raw, text });
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `smtp://127.0.0.1:${port}`,
    mails,
    waitFor: (predicate, timeoutMs = 5000) => waitFor('such a mail', () => mails.find(predicate), timeoutMs, 25),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export type MailServer = Awaited<ReturnType<typeof startMailServer>>;

/** A mail server for the file's tests, started before them (and before a later useTestApp) and closed after. */
export function useMailServer(): MailServer {
  let running: MailServer | undefined;
  const current = () => {
    if (!running) throw new Error('the mail server runs only inside tests and the hooks after useMailServer');
    return running;
  };
  beforeAll(async () => {
    running = await startMailServer();
  });
  afterAll(async () => {
    await running?.close();
  });
  return {
    get url() {
      return current().url;
    },
    get mails() {
      return current().mails;
    },
    waitFor: (predicate, timeoutMs) => current().waitFor(predicate, timeoutMs),
    close: () => current().close(),
  };
}

/** The token mailed in a verify link. */
export function tokenFromMail(mail: ReceivedMail): string {
  const match = /token=([A-Za-z0-9_-]{20,})/.exec(mail.text);
  if (!match?.[1]) throw new Error(`no token in mail: ${mail.text}`);
  return match[1];
}

export function decodeJwt(token: string): { header: Record<string, unknown>; payload: Record<string, unknown> } {
  const [header, payload] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(header!, 'base64url').toString('utf8')) as Record<string, unknown>,
    payload: JSON.parse(Buffer.from(payload!, 'base64url').toString('utf8')) as Record<string, unknown>,
  };
}
