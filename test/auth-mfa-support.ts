import { createHmac } from 'node:crypto';
import { request } from './helpers.js';

/** The claims of an access token, read without verifying it (the server did). */
export function claimsOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** RFC 4648 base32, as an `otpauth://` URL carries the secret. */
function base32Decode(text: string): Buffer {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const char of text.toUpperCase().replace(/=+$/, '')) {
    const value = alphabet.indexOf(char);
    if (value < 0) throw new Error(`not base32: ${char}`);
    bits += value.toString(2).padStart(5, '0');
  }
  const bytes = bits.match(/.{8}/g) ?? [];
  return Buffer.from(bytes.map((byte) => parseInt(byte, 2)));
}

/**
 * RFC 6238 TOTP with HMAC-SHA-1 (RFC 4226 section 5.3's dynamic truncation), written here
 * from the RFCs rather than taken from the library the server uses, so that a server that
 * accepts these codes is shown to compute what any authenticator app computes.
 */
export function rfc6238Code(key: Buffer, unixSeconds: number, digits = 6): string {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(unixSeconds / 30)));
  const mac = createHmac('sha1', key).update(counter).digest();
  const offset = mac[mac.length - 1]! & 0x0f;
  const truncated = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(truncated % 10 ** digits).padStart(digits, '0');
}

/** The code an authenticator app shows for `secret` (base32), `offsetSteps` steps from now. */
export function totpCode(secret: string, offsetSteps = 0): string {
  return rfc6238Code(base32Decode(secret), Date.now() / 1000 + offsetSteps * 30);
}

/**
 * Waits until the current 30-second step has at least `seconds` left, so that codes a test
 * computes for steps around now keep their meaning while the server checks them.
 */
export async function freshStep(seconds = 12): Promise<void> {
  const left = 30 - ((Date.now() / 1000) % 30);
  if (left < seconds) await new Promise((resolve) => setTimeout(resolve, left * 1000 + 200));
}

/** Enrols and verifies a TOTP factor for the holder of `token`: its id, secret, recovery codes and the aal2 session. */
export async function enableTotp(
  baseUrl: string,
  token: string,
  enrolment: { friendly_name?: string } = {},
): Promise<{ factorId: string; secret: string; recoveryCodes: string[]; accessToken: string; refreshToken: string }> {
  const enrolled = await request(baseUrl, 'POST', '/v1/auth/mfa/totp/enroll', { token, body: enrolment });
  if (enrolled.status !== 200) throw new Error(`enroll failed: ${enrolled.status} ${enrolled.text}`);
  const { factor_id: factorId, secret } = enrolled.body as { factor_id: string; secret: string };
  await freshStep();
  // The code of the step before now: the window accepts it, and the current and next steps
  // stay free for the test's own challenges.
  const verified = await request(baseUrl, 'POST', '/v1/auth/mfa/totp/verify', {
    token,
    body: { factor_id: factorId, code: totpCode(secret, -1) },
  });
  if (verified.status !== 200) throw new Error(`verify failed: ${verified.status} ${verified.text}`);
  const body = verified.body as {
    recovery_codes: string[];
    session: { access_token: string; refresh_token: string };
  };
  return {
    factorId,
    secret,
    recoveryCodes: body.recovery_codes,
    accessToken: body.session.access_token,
    refreshToken: body.session.refresh_token,
  };
}

/** A credential that parses, answering `challenge`, but whose bytes prove nothing. */
export function forgedAssertion(challengeValue: string, origin = 'http://127.0.0.1') {
  const clientData = { type: 'webauthn.get', challenge: challengeValue, origin };
  return {
    id: 'AAAA',
    rawId: 'AAAA',
    type: 'public-key',
    clientExtensionResults: {},
    response: {
      clientDataJSON: Buffer.from(JSON.stringify(clientData)).toString('base64url'),
      authenticatorData: 'AAAA',
      signature: 'AAAA',
    },
  };
}

/** A platform authenticator (CTAP2, internal) with resident keys that verifies its user, for CDP's WebAuthn.addVirtualAuthenticator. */
export const VIRTUAL_AUTHENTICATOR = {
  protocol: 'ctap2',
  transport: 'internal',
  hasResidentKey: true,
  hasUserVerification: true,
  isUserVerified: true,
  automaticPresenceSimulation: true,
} as const;
