import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { OAuthProviderConfig } from '../../../config.js';
import { AppError, isAppError } from '../../../internal/errors.js';

/** Who signed in at the provider, as the auth core needs it. */
export interface ProviderProfile {
  /** The provider's stable id of the account (`sub`, or GitHub's numeric id). */
  subject: string;
  email: string | null;
  emailVerified: boolean;
  userMetadata: Record<string, unknown>;
}

export interface AuthorizationParams {
  state: string;
  nonce: string;
  codeChallenge: string;
  redirectUri: string;
}

export interface CompletionParams {
  code: string;
  codeVerifier: string;
  nonce: string;
  redirectUri: string;
  /** The `iss` of the authorization response (RFC 9207), when the provider sends one. */
  iss: string | undefined;
}

export interface OAuthProvider {
  readonly name: string;
  authorizationUrl(params: AuthorizationParams): Promise<string>;
  /** Exchanges the code at the token endpoint and verifies whatever proves who signed in. */
  complete(params: CompletionParams): Promise<ProviderProfile>;
}

const HTTP_TIMEOUT_MS = 10_000;
/** Provider answers are small JSON documents; anything bigger is not one. */
const MAX_RESPONSE_BYTES = 1024 * 1024;
const DISCOVERY_TTL_MS = 60 * 60 * 1000;
/** Tolerated clock difference with the provider when checking exp and iat. */
const CLOCK_TOLERANCE_S = 60;

/**
 * A failure that the user's browser hears about: `error` is the OAuth error code put in
 * the redirect's fragment, next to the catalogue code.
 */
function rejected(error: string, message: string, cause?: unknown): AppError {
  return new AppError('INVALID_CREDENTIALS', message, { details: { error }, cause });
}

function unavailable(provider: string, cause?: unknown): AppError {
  return new AppError('UNAVAILABLE', `The sign-in provider "${provider}" could not be reached or answered wrongly.`, {
    details: { error: 'temporarily_unavailable' },
    cause,
  });
}

interface HttpAnswer {
  status: number;
  body: unknown;
}

/** Fetches JSON from a provider with a timeout and a size cap; network failures are UNAVAILABLE. */
async function fetchJson(provider: string, url: string, init: RequestInit = {}): Promise<HttpAnswer> {
  let response: Response;
  try {
    response = await fetch(url, { ...init, redirect: 'error', signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
  } catch (error) {
    throw unavailable(provider, error);
  }
  const length = Number(response.headers.get('content-length') ?? '0');
  if (length > MAX_RESPONSE_BYTES) throw unavailable(provider, new Error(`response of ${length} bytes from ${url}`));
  const text = await response.text().catch((error: unknown) => {
    throw unavailable(provider, error);
  });
  if (text.length > MAX_RESPONSE_BYTES) throw unavailable(provider, new Error(`oversized response from ${url}`));
  let body: unknown = undefined;
  try {
    body = text === '' ? undefined : JSON.parse(text);
  } catch {
    // Some providers answer errors in HTML or form encoding; callers treat it as no JSON.
  }
  return { status: response.status, body };
}

function record(value: unknown): Record<string, unknown> | null {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : null;
}

function text(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** Some providers (e.g. Cognito) send email_verified as the string "true". */
function truthy(value: unknown): boolean {
  return value === true || value === 'true';
}

function tokenError(provider: string, answer: HttpAnswer, cause?: unknown): AppError {
  const body = record(answer.body);
  if (answer.status >= 500)
    return unavailable(provider, cause ?? new Error(`token endpoint answered ${answer.status}`));
  const code = text(body?.error) ?? 'invalid_grant';
  const description = text(body?.error_description);
  return rejected(
    /^[a-z_]{1,64}$/.test(code) ? code : 'invalid_grant',
    `The provider "${provider}" did not accept the authorization code${description ? `: ${description}` : '.'}`,
    cause,
  );
}

/** RFC 6749 §2.3.1: the client id and secret are form-encoded before they go into Basic. */
function basicAuth(clientId: string, clientSecret: string): string {
  const encode = (part: string) => encodeURIComponent(part).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${encode(clientId)}:${encode(clientSecret)}`).toString('base64')}`;
}

interface Discovery {
  issuer: string;
  authorizationEndpoint: string;
  tokenEndpoint: string;
  userinfoEndpoint: string | null;
  tokenAuthMethods: string[] | null;
  /** RFC 9207: the provider puts `iss` on every authorization response. */
  sendsIss: boolean;
  jwks: JWTVerifyGetKey;
}

/** Any OpenID Connect provider, configured by its issuer and found through discovery. */
export class OidcProvider implements OAuthProvider {
  readonly name: string;
  private readonly issuer: string;
  /** Issuers accepted in the ID token's `iss`: Google also uses its bare host name. */
  private readonly acceptedIssuers: string[];
  private discovered: { value: Promise<Discovery>; at: number } | null = null;

  constructor(private readonly config: OAuthProviderConfig) {
    if (!config.issuer) throw new Error(`OAuth provider ${config.name} has no issuer`);
    this.name = config.name;
    this.issuer = config.issuer;
    this.acceptedIssuers =
      config.issuer === 'https://accounts.google.com' ? [config.issuer, 'accounts.google.com'] : [config.issuer];
  }

  /** Discovery is fetched on first use and refreshed hourly; a failed fetch is retried next time. */
  private discovery(): Promise<Discovery> {
    if (this.discovered && Date.now() - this.discovered.at < DISCOVERY_TTL_MS) return this.discovered.value;
    const value = this.discover();
    this.discovered = { value, at: Date.now() };
    value.catch(() => {
      if (this.discovered?.value === value) this.discovered = null;
    });
    return value;
  }

  private async discover(): Promise<Discovery> {
    const url = `${this.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    const answer = await fetchJson(this.name, url, { headers: { accept: 'application/json' } });
    const body = record(answer.body);
    if (answer.status !== 200 || !body) throw unavailable(this.name, new Error(`discovery ${url}: ${answer.status}`));
    const authorizationEndpoint = text(body.authorization_endpoint);
    const tokenEndpoint = text(body.token_endpoint);
    const jwksUri = text(body.jwks_uri);
    // OpenID Discovery §4.3: the document must name exactly the issuer it was fetched for.
    if (body.issuer !== this.issuer || !authorizationEndpoint || !tokenEndpoint || !jwksUri) {
      throw unavailable(this.name, new Error(`discovery document of ${this.issuer} is invalid`));
    }
    const methods = body.token_endpoint_auth_methods_supported;
    return {
      issuer: this.issuer,
      authorizationEndpoint,
      tokenEndpoint,
      userinfoEndpoint: text(body.userinfo_endpoint) ?? null,
      tokenAuthMethods: Array.isArray(methods) ? methods.filter((m): m is string => typeof m === 'string') : null,
      sendsIss: body.authorization_response_iss_parameter_supported === true,
      jwks: createRemoteJWKSet(new URL(jwksUri), { timeoutDuration: HTTP_TIMEOUT_MS }),
    };
  }

  async authorizationUrl(params: AuthorizationParams): Promise<string> {
    const discovery = await this.discovery();
    const url = new URL(discovery.authorizationEndpoint);
    url.searchParams.set('response_type', 'code');
    url.searchParams.set('client_id', this.config.clientId);
    url.searchParams.set('redirect_uri', params.redirectUri);
    url.searchParams.set('scope', this.config.scopes.join(' '));
    url.searchParams.set('state', params.state);
    url.searchParams.set('nonce', params.nonce);
    url.searchParams.set('code_challenge', params.codeChallenge);
    url.searchParams.set('code_challenge_method', 'S256');
    return url.toString();
  }

  async complete(params: CompletionParams): Promise<ProviderProfile> {
    const discovery = await this.discovery();
    // RFC 9207: a response that names another issuer was meant for another provider (mix-up attack).
    if (params.iss !== undefined ? params.iss !== discovery.issuer : discovery.sendsIss) {
      throw rejected('invalid_request', 'The authorization response did not come from the expected issuer.');
    }
    const tokens = await this.exchange(discovery, params);
    const claims = await this.verifyIdToken(discovery, tokens.idToken, params.nonce);
    let info: Record<string, unknown> = claims;
    // With the code flow many providers put profile claims only in userinfo, not in the ID token.
    if (text(claims.email) === undefined && discovery.userinfoEndpoint && tokens.accessToken) {
      const userinfo = await this.userinfo(discovery.userinfoEndpoint, tokens.accessToken);
      // OIDC Core §5.3.2: userinfo of another subject must not be used.
      if (userinfo.sub !== claims.sub) throw rejected('invalid_grant', 'The userinfo answer is for another subject.');
      info = { ...userinfo, ...claims, email: userinfo.email, email_verified: userinfo.email_verified };
    }
    return oidcProfile(this.config.issuer ?? '', info);
  }

  private async exchange(
    discovery: Discovery,
    params: CompletionParams,
  ): Promise<{ idToken: string; accessToken: string | undefined }> {
    const form = new URLSearchParams({
      grant_type: 'authorization_code',
      code: params.code,
      redirect_uri: params.redirectUri,
      code_verifier: params.codeVerifier,
    });
    const headers: Record<string, string> = {
      accept: 'application/json',
      'content-type': 'application/x-www-form-urlencoded',
    };
    const { clientId, clientSecret } = this.config;
    const methods = discovery.tokenAuthMethods;
    if (clientSecret && (methods === null || methods.includes('client_secret_basic'))) {
      headers.authorization = basicAuth(clientId, clientSecret);
    } else {
      form.set('client_id', clientId);
      if (clientSecret) form.set('client_secret', clientSecret);
    }
    const answer = await fetchJson(this.name, discovery.tokenEndpoint, { method: 'POST', headers, body: form });
    const body = record(answer.body);
    if (answer.status !== 200 || !body) throw tokenError(this.name, answer);
    const idToken = text(body.id_token);
    if (!idToken) throw rejected('invalid_grant', `The provider "${this.name}" returned no ID token.`);
    return { idToken, accessToken: text(body.access_token) };
  }

  private async verifyIdToken(discovery: Discovery, idToken: string, nonce: string): Promise<JWTPayload> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(idToken, discovery.jwks, {
        issuer: this.acceptedIssuers,
        audience: this.config.clientId,
        clockTolerance: CLOCK_TOLERANCE_S,
        requiredClaims: ['sub', 'exp', 'iat'],
      }));
    } catch (error) {
      if (error instanceof joseErrors.JWKSTimeout || (error instanceof Error && error.name === 'TypeError')) {
        throw unavailable(this.name, error);
      }
      if (isAppError(error)) throw error;
      throw rejected('invalid_grant', 'The ID token from the provider is not valid.', error);
    }
    if (payload.nonce !== nonce) throw rejected('invalid_grant', 'The ID token does not carry the expected nonce.');
    // OIDC Core §3.1.3.7: with several audiences, the authorized party must be this client.
    const audiences = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
    if (audiences.length > 1 && payload.azp !== this.config.clientId) {
      throw rejected('invalid_grant', 'The ID token was issued to another party.');
    }
    return payload;
  }

  private async userinfo(endpoint: string, accessToken: string): Promise<Record<string, unknown>> {
    const answer = await fetchJson(this.name, endpoint, {
      headers: { accept: 'application/json', authorization: `Bearer ${accessToken}` },
    });
    const body = record(answer.body);
    // A signed (JWT) userinfo answer is not supported: it arrives as no JSON object.
    if (answer.status !== 200 || !body) throw unavailable(this.name, new Error(`userinfo answered ${answer.status}`));
    return body;
  }
}

/** The profile of an OpenID Connect account, from its ID token claims (and userinfo). */
export function oidcProfile(issuer: string, claims: Record<string, unknown>): ProviderProfile {
  const subject = text(claims.sub);
  if (!subject) throw rejected('invalid_grant', 'The provider did not say who signed in.');
  const email = text(claims.email)?.trim() ?? null;
  const metadata: Record<string, unknown> = { iss: issuer, sub: subject };
  const name = text(claims.name);
  const picture = text(claims.picture);
  const username = text(claims.preferred_username);
  if (name) metadata.name = name;
  if (picture) metadata.avatar_url = picture;
  if (username) metadata.preferred_username = username;
  return { subject, email, emailVerified: email !== null && truthy(claims.email_verified), userMetadata: metadata };
}

export interface GitHubUser {
  id?: unknown;
  login?: unknown;
  name?: unknown;
  email?: unknown;
  avatar_url?: unknown;
  html_url?: unknown;
}

export interface GitHubEmail {
  email?: unknown;
  primary?: unknown;
  verified?: unknown;
}

/**
 * Maps GitHub's /user and /user/emails answers to a profile. The email is the primary
 * one when GitHub says it is verified, else any verified one; the public profile email is
 * only a fallback and never counts as verified (GitHub does not vouch for it).
 */
export function githubProfile(user: GitHubUser, emails: GitHubEmail[]): ProviderProfile {
  const id = typeof user.id === 'number' && Number.isSafeInteger(user.id) ? String(user.id) : text(user.id);
  if (!id || !/^\d+$/.test(id)) throw rejected('invalid_grant', 'GitHub did not say who signed in.');
  const listed = emails.filter((entry) => record(entry) !== null && text(entry.email) !== undefined);
  const verified =
    listed.find((entry) => entry.primary === true && entry.verified === true) ??
    listed.find((entry) => entry.verified === true);
  const fallback = listed.find((entry) => entry.primary === true) ?? null;
  const email = text(verified?.email) ?? text(fallback?.email) ?? text(user.email) ?? null;
  const metadata: Record<string, unknown> = { provider_id: id };
  const login = text(user.login);
  const name = text(user.name);
  const avatar = text(user.avatar_url);
  if (login) metadata.user_name = login;
  if (name ?? login) metadata.name = name ?? login;
  if (avatar) metadata.avatar_url = avatar;
  return { subject: id, email: email?.trim() ?? null, emailVerified: verified !== undefined, userMetadata: metadata };
}

/**
 * GitHub's OAuth apps: not OpenID Connect, so there is no ID token and no nonce. Who
 * signed in comes from the REST API with the access token (/user and /user/emails).
 */
export class GitHubProvider implements OAuthProvider {
  readonly name: string;
  private readonly webUrl: string;
  private readonly apiUrl: string;

  constructor(private readonly config: OAuthProviderConfig) {
    this.name = config.name;
    this.webUrl = config.webUrl ?? 'https://github.com';
    this.apiUrl = config.apiUrl ?? 'https://api.github.com';
  }

  async authorizationUrl(params: AuthorizationParams): Promise<string> {
    const url = new URL(`${this.webUrl}/login/oauth/authorize`);
    url.searchParams.set('client_id', this.config.clientId);
    url.searchParams.set('redirect_uri', params.redirectUri);
    url.searchParams.set('scope', this.config.scopes.join(' '));
    url.searchParams.set('state', params.state);
    url.searchParams.set('code_challenge', params.codeChallenge);
    url.searchParams.set('code_challenge_method', 'S256');
    return url.toString();
  }

  async complete(params: CompletionParams): Promise<ProviderProfile> {
    const form = new URLSearchParams({
      client_id: this.config.clientId,
      client_secret: this.config.clientSecret ?? '',
      code: params.code,
      redirect_uri: params.redirectUri,
      code_verifier: params.codeVerifier,
    });
    const answer = await fetchJson(this.name, `${this.webUrl}/login/oauth/access_token`, {
      method: 'POST',
      headers: { accept: 'application/json', 'content-type': 'application/x-www-form-urlencoded' },
      body: form,
    });
    const body = record(answer.body);
    // GitHub answers a refused code with 200 and an `error` field.
    const accessToken = text(body?.access_token);
    if (answer.status !== 200 || !accessToken) throw tokenError(this.name, answer);
    const headers = {
      accept: 'application/vnd.github+json',
      authorization: `Bearer ${accessToken}`,
      'user-agent': 'Basalt',
      'x-github-api-version': '2022-11-28',
    };
    const [user, emails] = await Promise.all([
      fetchJson(this.name, `${this.apiUrl}/user`, { headers }),
      fetchJson(this.name, `${this.apiUrl}/user/emails`, { headers }),
    ]);
    const userBody = record(user.body);
    if (user.status !== 200 || !userBody)
      throw unavailable(this.name, new Error(`GitHub /user answered ${user.status}`));
    // Without the user:email scope GitHub refuses /user/emails; the account then has no verified email.
    const emailList = emails.status === 200 && Array.isArray(emails.body) ? (emails.body as GitHubEmail[]) : [];
    return githubProfile(userBody, emailList);
  }
}

export function createProvider(config: OAuthProviderConfig): OAuthProvider {
  return config.type === 'github' ? new GitHubProvider(config) : new OidcProvider(config);
}
