import { timingSafeEqual } from 'node:crypto';
import { AppError, isAppError, type ErrorCode } from '../../../internal/errors.js';
import type { Logger } from '../../../internal/log.js';
import type { RuntimeConfig } from '../../../internal/platform.js';
import {
  STATE_TTL_SECONDS,
  bindingCookieName,
  codeChallenge,
  digest,
  fragment,
  newFlowSecrets,
  readCookie,
} from './flow.js';
import { createProvider, type OAuthProvider, type ProviderProfile } from './providers.js';
import type { OAuthRepository } from './repository.js';

/** The session as the auth core issues it (API.md's session object). */
export interface IssuedSession {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  expires_at: number;
  token_type: string;
}

export interface IdentitySignInInput extends ProviderProfile {
  provider: string;
}

/**
 * What OAuth needs from the auth core: sign in the owner of an external identity,
 * creating the user or linking the identity to an existing user only by a verified email.
 */
export interface IdentitySignIn {
  signInWithIdentity(
    input: IdentitySignInInput,
    context: { ip: string; userAgent: string | null },
  ): Promise<{ session: IssuedSession | null; mfa_required?: boolean }>;
}

/** A cookie for the routes to set; the service knows no HTTP, only what to say. */
export interface CookieInstruction {
  name: string;
  value: string;
  path: string;
  maxAge: number;
  secure: boolean;
}

export interface CallbackQuery {
  code?: string;
  state?: string;
  error?: string;
  error_description?: string;
  iss?: string;
}

export interface CallbackResult {
  location: string;
  /** The per-sign-in binding cookie, expired again. */
  clearCookie: CookieInstruction;
}

/** The OAuth error of the fragment when a failure brings no code of its own. */
const OAUTH_ERRORS: Partial<Record<ErrorCode, string>> = {
  INVALID_CREDENTIALS: 'invalid_grant',
  FORBIDDEN: 'access_denied',
  ALREADY_EXISTS: 'access_denied',
  UNAUTHENTICATED: 'access_denied',
  UNAVAILABLE: 'temporarily_unavailable',
  RATE_LIMITED: 'temporarily_unavailable',
  INTERNAL: 'server_error',
};

/**
 * Hands the auth core an email only when the provider vouches for it. An unverified
 * address put on a new account would let whoever typed it at some provider squat the
 * address: when its real owner later signs in with a verified identity, the account is
 * linked to them while the squatter's identity still opens it. The unverified address is
 * kept in user_metadata, where it proves nothing.
 */
export function withTrustedEmail(profile: ProviderProfile): ProviderProfile {
  if (profile.emailVerified || profile.email === null) return profile;
  return {
    ...profile,
    email: null,
    userMetadata: { ...profile.userMetadata, email: profile.email, email_verified: false },
  };
}

/** Counts requests per key across instances; throws RATE_LIMITED over the limit. */
export interface RequestLimiter {
  consume(key: string, limit: number): Promise<void>;
}

export interface OAuthServiceOptions {
  config: RuntimeConfig;
  repository: OAuthRepository;
  auth: IdentitySignIn;
  limiter: RequestLimiter;
  log: Logger;
}

/**
 * Sign-in with OAuth 2 / OpenID Connect providers: the authorization code flow with
 * PKCE (S256), a single-use server-side state, a nonce checked in the ID token, and a
 * cookie binding the callback to the browser that started the sign-in.
 */
export class OAuthService {
  private readonly providers: Map<string, OAuthProvider>;
  private readonly config: RuntimeConfig;
  private readonly repository: OAuthRepository;
  private readonly auth: IdentitySignIn;
  private readonly limiter: RequestLimiter;
  private readonly log: Logger;

  constructor(options: OAuthServiceOptions) {
    this.config = options.config;
    this.repository = options.repository;
    this.auth = options.auth;
    this.limiter = options.limiter;
    this.log = options.log;
    this.providers = new Map(options.config.auth.oauthProviders.map((p) => [p.name, createProvider(p)]));
  }

  /** Names of the configured providers. */
  providerNames(): string[] {
    return [...this.providers.keys()];
  }

  /** The redirect URI registered at every provider. Read per call: the public URL is resolved at start. */
  callbackUrl(): string {
    return `${this.config.publicUrl}/v1/auth/callback`;
  }

  private cookie(name: string, value: string, maxAge: number): CookieInstruction {
    const callback = new URL(this.callbackUrl());
    return { name, value, path: callback.pathname, maxAge, secure: callback.protocol === 'https:' };
  }

  /**
   * Starts a sign-in: checks `redirect_to` against the allowlist before anything else,
   * stores the state and returns the provider's authorization URL.
   */
  async authorize(
    input: { provider: string; redirectTo: string | undefined },
    context: { ip: string },
  ): Promise<{ url: string; cookie: CookieInstruction }> {
    const allowed = this.config.auth.redirectUrls;
    const redirectTo = input.redirectTo ?? allowed[0];
    if (redirectTo === undefined) {
      throw new AppError('INVALID_REQUEST', 'redirect_to is required (no BASALT_AUTH_REDIRECT_URLS are configured).');
    }
    // Exact match only: prefix or pattern matching is how open redirects and token leaks happen.
    if (!allowed.includes(redirectTo)) {
      throw new AppError('INVALID_REQUEST', 'redirect_to is not one of the allowed redirect URLs.', {
        details: { redirect_to: redirectTo },
      });
    }
    const provider = this.providers.get(input.provider);
    if (!provider) {
      throw new AppError('INVALID_REQUEST', `The provider "${input.provider}" is not configured.`, {
        details: { provider: input.provider, providers: this.providerNames() },
      });
    }
    // Each sign-in started stores a row: counted like password sign-ins, per client IP.
    await this.limiter.consume(`oauth:ip:${context.ip || 'unknown'}`, this.config.auth.rateLimits.signinPerIp);
    const secrets = newFlowSecrets();
    const url = await provider.authorizationUrl({
      state: secrets.state,
      nonce: secrets.nonce,
      codeChallenge: codeChallenge(secrets.codeVerifier),
      redirectUri: this.callbackUrl(),
    });
    await this.repository.insertState({
      stateHash: digest(secrets.state),
      provider: provider.name,
      codeVerifier: secrets.codeVerifier,
      nonce: secrets.nonce,
      redirectTo,
      bindingHash: digest(secrets.binding),
      ttlSeconds: STATE_TTL_SECONDS,
    });
    this.repository.deleteExpired().catch((error: unknown) => {
      this.log.warn({ err: error }, 'could not delete expired OAuth states');
    });
    return { url, cookie: this.cookie(bindingCookieName(secrets.state), secrets.binding, STATE_TTL_SECONDS) };
  }

  /**
   * Completes a sign-in. An unknown, used or expired state is a 400 (there is nowhere
   * safe to send the browser); once the state is known, every failure goes back to the
   * app's redirect_to as `#error=...&error_code=...&error_description=...`.
   */
  async callback(
    query: CallbackQuery,
    request: { cookieHeader: string | undefined; userAgent: string | null; ip: string },
  ): Promise<CallbackResult> {
    if (!query.state) {
      throw new AppError('INVALID_REQUEST', 'The callback has no state; start the sign-in at /v1/auth/authorize.');
    }
    const stored = await this.repository.consumeState(digest(query.state));
    if (!stored || !stored.live) {
      throw new AppError('INVALID_TOKEN', 'The sign-in state is unknown, expired or already used; sign in again.');
    }
    const cookieName = bindingCookieName(query.state);
    const clearCookie = this.cookie(cookieName, '', 0);
    try {
      const binding = readCookie(request.cookieHeader, cookieName);
      if (binding === undefined || !timingSafeEqual(digest(binding), stored.bindingHash)) {
        throw new AppError('FORBIDDEN', 'The sign-in was not started in this browser.', {
          details: { error: 'access_denied' },
        });
      }
      if (query.error !== undefined) {
        const error = /^[a-z_]{1,64}$/.test(query.error) ? query.error : 'access_denied';
        throw new AppError(
          error === 'access_denied' ? 'FORBIDDEN' : 'INVALID_CREDENTIALS',
          query.error_description ?? `The provider refused the sign-in (${error}).`,
          { details: { error } },
        );
      }
      if (!query.code) {
        throw new AppError('INVALID_REQUEST', 'The provider sent no authorization code.', {
          details: { error: 'invalid_request' },
        });
      }
      const provider = this.providers.get(stored.provider);
      if (!provider) {
        throw new AppError('INVALID_REQUEST', `The provider "${stored.provider}" is no longer configured.`, {
          details: { error: 'invalid_request' },
        });
      }
      const profile = await provider.complete({
        code: query.code,
        codeVerifier: stored.codeVerifier,
        nonce: stored.nonce,
        redirectUri: this.callbackUrl(),
        iss: query.iss,
      });
      const { session, mfa_required: mfaRequired } = await this.auth.signInWithIdentity(
        { provider: provider.name, ...withTrustedEmail(profile) },
        { userAgent: request.userAgent, ip: request.ip },
      );
      if (!session) {
        throw new AppError('FORBIDDEN', 'The account must confirm its email before it can sign in.', {
          details: { error: 'access_denied' },
        });
      }
      const location =
        stored.redirectTo +
        fragment({
          access_token: session.access_token,
          refresh_token: session.refresh_token,
          expires_in: session.expires_in,
          expires_at: session.expires_at,
          token_type: 'bearer',
          // The user has a second factor: this session is aal1 until the app runs a challenge.
          ...(mfaRequired ? { mfa_required: 'true' } : {}),
        });
      return { location, clearCookie };
    } catch (thrown) {
      const error = isAppError(thrown) ? thrown : new AppError('INTERNAL', undefined, { cause: thrown });
      if (error.status >= 500) {
        this.log.error({ err: error.cause ?? error, provider: stored.provider }, 'OAuth sign-in failed');
      } else {
        this.log.info({ code: error.code, reason: error.message, provider: stored.provider }, 'OAuth sign-in refused');
      }
      const given = error.details?.error;
      const location =
        stored.redirectTo +
        fragment({
          error: typeof given === 'string' ? given : (OAUTH_ERRORS[error.code] ?? 'invalid_request'),
          error_code: error.code,
          error_description: error.message,
        });
      return { location, clearCookie };
    }
  }
}
