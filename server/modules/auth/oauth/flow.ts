import { createHash, randomBytes } from 'node:crypto';

/** How long a sign-in may take between /authorize and /callback. */
export const STATE_TTL_SECONDS = 10 * 60;

/** 256 random bits, URL-safe: also a valid PKCE verifier (43 characters of the unreserved set). */
export function randomSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** RFC 7636 S256: BASE64URL(SHA256(ASCII(code_verifier))). */
export function codeChallenge(verifier: string): string {
  return createHash('sha256').update(verifier, 'ascii').digest('base64url');
}

export function digest(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}

/** What one authorization in flight needs, made fresh for each /authorize. */
export interface FlowSecrets {
  state: string;
  codeVerifier: string;
  nonce: string;
  /** Set as a cookie in the browser that starts the sign-in; the callback must bring it back. */
  binding: string;
}

export function newFlowSecrets(): FlowSecrets {
  return { state: randomSecret(), codeVerifier: randomSecret(), nonce: randomSecret(), binding: randomSecret() };
}

/**
 * The browser-binding cookie's name is per sign-in, so two sign-ins started in two tabs
 * do not overwrite each other's cookie. It is derived from the state's digest, which the
 * callback can compute from the state it receives.
 */
export function bindingCookieName(state: string): string {
  return `basalt_oauth_${digest(state).subarray(0, 9).toString('base64url').replace(/[-_]/g, 'x')}`;
}

/** Reads one cookie from a Cookie header without a cookie library: names here are plain ASCII. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const index = part.indexOf('=');
    if (index < 0) continue;
    if (part.slice(0, index).trim() === name) return part.slice(index + 1).trim();
  }
  return undefined;
}

/** The URL fragment handed to the app: `#key=value&...`, form-encoded like a query. */
export function fragment(values: Record<string, string | number>): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) params.set(key, String(value));
  return `#${params.toString()}`;
}
