import {
  createHash,
  createPrivateKey,
  randomBytes,
  randomUUID,
  sign,
  type JsonWebKey as NodeJsonWebKey,
  type KeyObject,
} from 'node:crypto';
import {
  exportJWK,
  generateKeyPair,
  importJWK,
  jwtVerify,
  type JWK,
  type JWTHeaderParameters,
  type JWTPayload,
} from 'jose';
import { AppError, databaseUnavailable, isConnectionError } from '../../internal/errors.js';
import type { Logger } from '../../internal/log.js';
import type { AuthRepository } from './repository.js';
import type { NewSigningKey } from './repository/signing-keys.js';
import { SecretSealer } from './sealer.js';

export const ACCESS_TOKEN_ALG = 'ES256';
/** RFC 9068: an access token says what it is, so an ID token or another JWT cannot pass for one. */
export const ACCESS_TOKEN_TYP = 'at+jwt';
export const ACCESS_TOKEN_AUDIENCE = 'basalt';

/** 256 bits from the CSPRNG, URL-safe: refresh tokens and mailed tokens. */
export function randomToken(): string {
  return randomBytes(32).toString('base64url');
}

/** Opaque tokens are stored only as this digest; a leaked table yields no usable token. */
export function tokenHash(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/**
 * Whether each of the three segments is the one base64url text of its bytes. Decoders
 * ignore the spare low bits of the last character (and skip stray characters), so
 * without this one signed token would have many spellings that all verify.
 */
function isCanonicalCompactJws(token: string): boolean {
  const segments = token.split('.');
  return (
    segments.length === 3 &&
    segments.every((segment) => Buffer.from(segment, 'base64url').toString('base64url') === segment)
  );
}

function base64url(value: object): string {
  return Buffer.from(JSON.stringify(value), 'utf8').toString('base64url');
}

interface LoadedKey {
  kid: string;
  publicJwk: JWK;
  publicKey: CryptoKey;
  retiredAt: Date | null;
}

/** The claims Basalt puts into an access token. */
export interface AccessClaims {
  sub: string;
  role: 'authenticated' | 'anon';
  email: string | null;
  /** Whether `email` was proven by its owner (a mailed link, or a provider that verified it). */
  email_verified: boolean;
  session_id: string;
  is_anonymous: boolean;
  app_metadata: Record<string, unknown>;
  /** RFC 8693's actor claim: who acts as `sub` ("view as" sessions: `{sub: "service"}`). */
  act?: { sub: string };
  /** The session's assurance level: `aal2` once a second factor was proven. */
  aal: AssuranceLevel;
}

/** NIST SP 800-63B authenticator assurance levels, as far as Basalt has them. */
export type AssuranceLevel = 'aal1' | 'aal2';

export interface VerifiedAccess extends AccessClaims {
  exp: number;
  iat: number;
}

/**
 * Signing keys in Postgres, shared by all instances. The newest unretired key signs;
 * retired keys stay in the JWKS and keep verifying until every token they signed expired.
 */
export class SigningKeys {
  private keys = new Map<string, LoadedKey>();
  /** The signer, imported once per key (not per token): a Node key object for node:crypto's sign. */
  private current: { kid: string; privateKey: KeyObject } | null = null;
  private loading: Promise<void> | null = null;
  private lastLoad = 0;
  private readonly sealer: SecretSealer;

  constructor(
    private readonly repo: Pick<AuthRepository, 'signingKeys'>,
    private readonly options: { accessTokenTtlSeconds: number; encryptionKey: string | null; log: Logger },
  ) {
    this.sealer = new SecretSealer(options.encryptionKey, 'signing-keys');
  }

  /** Retired keys are published this long: the longest life of a token they signed, plus slack. */
  private get horizonSeconds(): number {
    return this.options.accessTokenTtlSeconds + 60;
  }

  private async generate(): Promise<NewSigningKey> {
    const { publicKey, privateKey } = await generateKeyPair(ACCESS_TOKEN_ALG, { extractable: true });
    const kid = randomUUID();
    const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: ACCESS_TOKEN_ALG, use: 'sig' };
    const privateJwk = await exportJWK(privateKey);
    return {
      kid,
      alg: ACCESS_TOKEN_ALG,
      publicJwk,
      privateKey: this.sealer.seal(JSON.stringify(privateJwk)),
    };
  }

  /** Loads keys from Postgres, creating the first one if there is none. */
  async load(): Promise<void> {
    this.loading ??= this.doLoad().finally(() => {
      this.loading = null;
    });
    return this.loading;
  }

  private async doLoad(): Promise<void> {
    let rows = await this.repo.signingKeys.list(this.horizonSeconds);
    if (!rows.some((row) => row.retiredAt === null)) {
      await this.repo.signingKeys.insertFirst(await this.generate());
      rows = await this.repo.signingKeys.list(this.horizonSeconds);
    }
    const keys = new Map<string, LoadedKey>();
    for (const row of rows) {
      const publicJwk = row.publicJwk as JWK;
      keys.set(row.kid, {
        kid: row.kid,
        publicJwk,
        publicKey: (await importJWK(publicJwk, ACCESS_TOKEN_ALG)) as CryptoKey,
        retiredAt: row.retiredAt,
      });
    }
    const signer = rows.find((row) => row.retiredAt === null);
    if (!signer) throw new Error('no current signing key');
    if (this.current?.kid !== signer.kid) {
      const privateJwk = JSON.parse(this.sealer.open(signer.privateKey)) as JWK;
      this.current = {
        kid: signer.kid,
        privateKey: createPrivateKey({ key: privateJwk as NodeJsonWebKey, format: 'jwk' }),
      };
    }
    this.keys = keys;
    this.lastLoad = Date.now();
  }

  async rotate(): Promise<string> {
    const key = await this.generate();
    await this.repo.signingKeys.rotate(key);
    await this.load();
    return key.kid;
  }

  async signer(): Promise<{ kid: string; privateKey: KeyObject }> {
    if (!this.current) await this.load();
    return this.current!;
  }

  /** A key by id; an unknown id triggers one reload (another instance may have rotated), at most once a second. */
  async publicKey(kid: string): Promise<CryptoKey | null> {
    const known = this.keys.get(kid);
    if (known) return known.publicKey;
    if (Date.now() - this.lastLoad > 1000) {
      await this.load();
      return this.keys.get(kid)?.publicKey ?? null;
    }
    return null;
  }

  /** Changes whenever the set of keys or the signing key changes (the periodic reload backs off while it does not). */
  get fingerprint(): string {
    return `${this.current?.kid ?? ''}|${[...this.keys.keys()].sort().join(',')}`;
  }

  /** Published keys; read again first when the last load is older than `maxAgeMs` (the periodic reload may be idle). */
  async jwks(maxAgeMs = 10_000): Promise<{ keys: JWK[] }> {
    if (this.keys.size === 0 || Date.now() - this.lastLoad > maxAgeMs) await this.load();
    return { keys: [...this.keys.values()].map((key) => key.publicJwk) };
  }
}

/**
 * Access tokens already verified in this process, until they expire. A client sends the
 * same token for up to its whole lifetime, so nearly every request skips the signature
 * check; the key is the whole token, so only a byte-identical token hits. Revocation is
 * still checked on every request by the caller. Bounded: the oldest entries go first.
 */
export class VerifiedTokenCache {
  private readonly entries = new Map<string, VerifiedAccess>();

  constructor(private readonly maxEntries = 10_000) {}

  get(token: string, nowSeconds: number): VerifiedAccess | null {
    const hit = this.entries.get(token);
    if (!hit) return null;
    if (hit.exp <= nowSeconds) {
      this.entries.delete(token);
      return null;
    }
    // A copy: no request can change what the next one is handed.
    return structuredClone(hit);
  }

  set(token: string, verified: VerifiedAccess): void {
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    this.entries.set(token, verified);
  }

  get size(): number {
    return this.entries.size;
  }
}

/** Issues and verifies access tokens, pinning algorithm, type, issuer and audience. */
export class AccessTokens {
  private readonly verified = new VerifiedTokenCache();

  constructor(
    private readonly keys: SigningKeys,
    private readonly options: { issuer: string; ttlSeconds: number },
  ) {}

  get issuer(): string {
    return this.options.issuer;
  }

  /**
   * Signs and checks with `issuer` from now on: the one stored in the database, which every
   * instance of that database shares whatever its own address (see the auth module's start).
   */
  useIssuer(issuer: string): void {
    this.options.issuer = issuer;
  }

  /**
   * A compact JWS (RFC 7515) signed with ES256 by node:crypto directly: the same token jose
   * would make, at less than half its CPU (jose signs through WebCrypto, which hands every
   * signature to the thread pool). `ieee-p1363` gives the raw r||s signature JWS requires.
   */
  async issue(
    claims: AccessClaims,
    ttlSeconds = this.options.ttlSeconds,
  ): Promise<{ token: string; expiresAt: number; expiresIn: number }> {
    const { kid, privateKey } = await this.keys.signer();
    const now = Math.floor(Date.now() / 1000);
    const expiresAt = now + ttlSeconds;
    const header = { alg: ACCESS_TOKEN_ALG, typ: ACCESS_TOKEN_TYP, kid };
    const payload = {
      ...claims,
      iss: this.options.issuer,
      aud: ACCESS_TOKEN_AUDIENCE,
      iat: now,
      exp: expiresAt,
    };
    const input = `${base64url(header)}.${base64url(payload)}`;
    const signature = sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
    return { token: `${input}.${signature.toString('base64url')}`, expiresAt, expiresIn: ttlSeconds };
  }

  /** Throws UNAUTHENTICATED for anything but a well-formed, unexpired token signed by one of our keys. */
  async verify(token: string): Promise<VerifiedAccess> {
    const cached = this.verified.get(token, Math.floor(Date.now() / 1000));
    if (cached) return cached;
    const verified = await this.verifySignature(token);
    this.verified.set(token, verified);
    return verified;
  }

  private async verifySignature(token: string): Promise<VerifiedAccess> {
    if (!isCanonicalCompactJws(token)) throw new AppError('UNAUTHENTICATED', 'The access token is not valid.');
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(
        token,
        async (header: JWTHeaderParameters) => {
          if (header.alg !== ACCESS_TOKEN_ALG || typeof header.kid !== 'string') throw new Error('bad header');
          const key = await this.keys.publicKey(header.kid);
          if (!key) throw new Error('unknown kid');
          return key;
        },
        {
          algorithms: [ACCESS_TOKEN_ALG],
          typ: ACCESS_TOKEN_TYP,
          issuer: this.options.issuer,
          audience: ACCESS_TOKEN_AUDIENCE,
          requiredClaims: ['sub', 'exp', 'iat', 'session_id', 'role'],
        },
      ));
    } catch (error) {
      // The signing keys could not be read (Postgres unreachable): not the token's fault.
      if (isConnectionError(error)) throw databaseUnavailable(error);
      throw new AppError('UNAUTHENTICATED', 'The access token is not valid.', { cause: error });
    }
    const { sub, role, email, session_id: sessionId, app_metadata: appMetadata, exp, iat, act } = payload;
    if (
      typeof sub !== 'string' ||
      (role !== 'authenticated' && role !== 'anon') ||
      typeof sessionId !== 'string' ||
      typeof exp !== 'number' ||
      typeof iat !== 'number'
    ) {
      throw new AppError('UNAUTHENTICATED', 'The access token is not valid.');
    }
    return {
      sub,
      role,
      email: typeof email === 'string' ? email : null,
      email_verified: payload.email_verified === true,
      session_id: sessionId,
      is_anonymous: payload.is_anonymous === true,
      // Only a token that says aal2 is one: a token without the claim proves no second factor.
      aal: payload.aal === 'aal2' ? 'aal2' : 'aal1',
      app_metadata:
        appMetadata && typeof appMetadata === 'object' && !Array.isArray(appMetadata)
          ? (appMetadata as Record<string, unknown>)
          : {},
      ...(actorClaim(act) ?? {}),
      exp,
      iat,
    };
  }
}

/** `act` as `{act: {sub}}` when it is a well-formed actor claim; anything else is no actor. */
function actorClaim(act: unknown): { act: { sub: string } } | null {
  if (act === null || typeof act !== 'object' || Array.isArray(act)) return null;
  const sub = (act as Record<string, unknown>).sub;
  return typeof sub === 'string' && sub !== '' ? { act: { sub } } : null;
}
