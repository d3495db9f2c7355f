import type { HttpTransport, SessionStorage } from './client.js';
import { BasaltError } from './errors.js';

/** A session as the server issues it. `expires_at` is in seconds since the epoch. */
export interface Session {
  access_token: string;
  token_type: 'bearer';
  expires_in: number;
  expires_at: number;
  refresh_token: string;
}

export interface User {
  id: string;
  email: string | null;
  email_confirmed_at: string | null;
  is_anonymous: boolean;
  created_at: string;
  updated_at: string;
  last_sign_in_at?: string | null;
  user_metadata: Record<string, unknown>;
  app_metadata: Record<string, unknown>;
}

export interface AuthResponse {
  user: User;
  session: Session | null;
}

export interface SessionInfo {
  id: string;
  created_at: string;
  refreshed_at: string;
  expires_at: string;
  user_agent: string | null;
  ip: string | null;
  current: boolean;
}

export type AuthChangeEvent = 'SIGNED_IN' | 'SIGNED_OUT' | 'TOKEN_REFRESHED' | 'USER_UPDATED';
export type AuthStateListener = (event: AuthChangeEvent, session: Session | null) => void;
export type VerifyType = 'signup' | 'recovery' | 'magiclink' | 'email_change';

export interface AuthOptions {
  /** Where the session persists; `null` keeps it in memory only. */
  storage: SessionStorage | null;
  /** Key under which the session is stored. */
  storageKey: string;
  /** Refresh the access token shortly before it expires (default true). */
  autoRefreshToken: boolean;
  /** In a browser, take a session from the URL fragment after an OAuth or email redirect (default true). */
  detectSessionInUrl: boolean;
}

interface Stored {
  session: Session;
  user: User;
}

/** Refresh this long before expiry, or at three quarters of a very short token life. */
const REFRESH_MARGIN_SECONDS = 60;
/** A token this close to expiry is refreshed before a request uses it. */
const EXPIRY_SKEW_SECONDS = 10;
const RETRY_AFTER_FAILURE_MS = 5_000;

interface BrowserLocation {
  href: string;
  hash: string;
  assign(url: string): void;
}

function browserLocation(): BrowserLocation | null {
  const g = globalThis as { window?: unknown; location?: BrowserLocation };
  return g.window !== undefined && g.location !== undefined ? g.location : null;
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/**
 * `basalt.auth`: sign-up and sign-in, the current session (persisted, refreshed before it
 * expires, one refresh at a time however many callers need it) and auth-state events.
 */
export class AuthClient {
  private current: Stored | null = null;
  private refreshing: Promise<Session | null> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private readonly listeners = new Set<AuthStateListener>();
  /** Resolves once the stored session (and any session in the URL) has been loaded. */
  readonly ready: Promise<void>;

  constructor(
    private readonly http: HttpTransport,
    private readonly options: AuthOptions,
  ) {
    http.useAccessToken(() => this.accessToken());
    this.ready = this.initialize();
  }

  /** The current session, or null. */
  get session(): Session | null {
    return this.current?.session ?? null;
  }

  /** The signed-in user as last seen, or null. */
  get user(): User | null {
    return this.current?.user ?? null;
  }

  onAuthStateChange(listener: AuthStateListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  // ---- sign-in -----------------------------------------------------------------------

  async signUp(input: {
    email: string;
    password: string;
    data?: Record<string, unknown>;
    redirectTo?: string;
  }): Promise<AuthResponse> {
    await this.ready;
    const result = await this.http.request<AuthResponse>(
      'POST',
      '/v1/auth/signup',
      { email: input.email, password: input.password, data: input.data, redirect_to: input.redirectTo },
      {},
      { anonymous: true },
    );
    if (result.session) await this.adopt(result.session, result.user, 'SIGNED_IN');
    return result;
  }

  async signIn(input: { email: string; password: string }): Promise<AuthResponse> {
    await this.ready;
    const result = await this.http.request<AuthResponse>(
      'POST',
      '/v1/auth/signin',
      { email: input.email, password: input.password },
      {},
      { anonymous: true },
    );
    if (result.session) await this.adopt(result.session, result.user, 'SIGNED_IN');
    return result;
  }

  async signInAnonymously(input: { data?: Record<string, unknown> } = {}): Promise<AuthResponse> {
    await this.ready;
    const result = await this.http.request<AuthResponse>(
      'POST',
      '/v1/auth/anonymous',
      input.data ? { data: input.data } : undefined,
      {},
      { anonymous: true },
    );
    if (result.session) await this.adopt(result.session, result.user, 'SIGNED_IN');
    return result;
  }

  /**
   * Starts an OAuth sign-in. In a browser this navigates to the provider (the session comes
   * back in the URL fragment and is picked up on the next load); elsewhere it returns the URL.
   */
  async signInWithOAuth(input: { provider: string; redirectTo?: string }): Promise<{ url: string }> {
    const params = new URLSearchParams({ provider: input.provider });
    const redirectTo = input.redirectTo ?? browserLocation()?.href;
    if (redirectTo) params.set('redirect_to', redirectTo);
    const url = `${this.http.baseUrl}/v1/auth/authorize?${params.toString()}`;
    browserLocation()?.assign(url);
    return { url };
  }

  /** Mails a sign-in link. Resolves the same whether or not the address has an account. */
  async signInWithMagicLink(email: string, options: { redirectTo?: string } = {}): Promise<void> {
    await this.http.request(
      'POST',
      '/v1/auth/magiclink',
      { email, redirect_to: options.redirectTo },
      {},
      { anonymous: true },
    );
  }

  /**
   * Ends the session on the server (this one, or all of them with `global`) and forgets
   * it locally. Signing out locally succeeds even when the server cannot be reached.
   */
  async signOut(options: { scope?: 'local' | 'global' | 'others' } = {}): Promise<void> {
    await this.ready;
    const scope = options.scope ?? 'local';
    let failure: unknown = null;
    if (this.current) {
      try {
        await this.http.request('POST', '/v1/auth/signout', { scope });
      } catch (error) {
        if (scope === 'others') throw error;
        // An already-ended session is signed out; other failures still sign out here.
        if (!(error instanceof BasaltError) || error.code !== 'UNAUTHENTICATED') failure = error;
      }
    }
    if (scope === 'others') return;
    await this.clear();
    // "Everywhere" was not confirmed by the server: the caller must know.
    if (scope === 'global' && failure) throw failure;
  }

  // ---- the user ----------------------------------------------------------------------

  /** The user from the server (not the cached copy). */
  async getUser(): Promise<User> {
    await this.ready;
    const user = await this.http.request<User>('GET', '/v1/auth/user');
    if (this.current) {
      this.current = { ...this.current, user };
      await this.persist();
    }
    return user;
  }

  /**
   * Changes email, password or metadata. An anonymous user who gives an email becomes a
   * permanent user with the same id; the session is refreshed so its token says so.
   */
  async updateUser(input: {
    email?: string;
    password?: string;
    data?: Record<string, unknown>;
    redirectTo?: string;
  }): Promise<User> {
    await this.ready;
    const wasAnonymous = this.current?.user.is_anonymous === true;
    const user = await this.http.request<User>('PATCH', '/v1/auth/user', {
      email: input.email,
      password: input.password,
      data: input.data,
      redirect_to: input.redirectTo,
    });
    if (this.current) {
      this.current = { ...this.current, user };
      await this.persist();
      this.emit('USER_UPDATED');
      if (wasAnonymous && !user.is_anonymous) await this.refreshSession();
    }
    return user;
  }

  /** Mails a password-recovery link. Resolves the same whether or not the address has an account. */
  async recover(email: string, options: { redirectTo?: string } = {}): Promise<void> {
    await this.http.request(
      'POST',
      '/v1/auth/recover',
      { email, redirect_to: options.redirectTo },
      {},
      { anonymous: true },
    );
  }

  /** Spends a mailed token (with the new password for `recovery`) and signs in. */
  async verify(input: { type: VerifyType; token: string; password?: string }): Promise<AuthResponse> {
    await this.ready;
    const result = await this.http.request<AuthResponse>(
      'POST',
      '/v1/auth/verify',
      { type: input.type, token: input.token, password: input.password },
      {},
      { anonymous: true },
    );
    if (result.session) await this.adopt(result.session, result.user, 'SIGNED_IN');
    return result;
  }

  async listSessions(): Promise<SessionInfo[]> {
    const { sessions } = await this.http.request<{ sessions: SessionInfo[] }>('GET', '/v1/auth/sessions');
    return sessions;
  }

  async revokeSession(id: string): Promise<void> {
    await this.http.request('DELETE', `/v1/auth/sessions/${encodeURIComponent(id)}`);
  }

  // ---- sessions ----------------------------------------------------------------------

  /**
   * Exchanges the refresh token for a new session. Concurrent callers share one request:
   * a rotated refresh token must not be spent twice.
   */
  refreshSession(): Promise<Session | null> {
    this.refreshing ??= this.doRefresh().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private async doRefresh(): Promise<Session | null> {
    // Tabs share the stored session. If another tab already refreshed, take its session
    // instead of spending our (now rotated-out) token: reusing it after the grace window
    // would revoke the session for every tab.
    const stored = await this.load();
    if (
      stored &&
      this.current &&
      stored.user.id === this.current.user.id &&
      stored.session.refresh_token !== this.current.session.refresh_token &&
      stored.session.expires_at >= this.current.session.expires_at
    ) {
      this.current = stored;
      this.schedule();
      this.emit('TOKEN_REFRESHED');
      if (stored.session.expires_at - nowSeconds() > EXPIRY_SKEW_SECONDS) return stored.session;
    }
    const refreshToken = this.current?.session.refresh_token;
    if (!refreshToken) return null;
    let result: AuthResponse;
    try {
      result = await this.http.request<AuthResponse>(
        'POST',
        '/v1/auth/refresh',
        { refresh_token: refreshToken },
        {},
        { anonymous: true },
      );
    } catch (error) {
      if (error instanceof BasaltError && (error.code === 'UNAUTHENTICATED' || error.code === 'INVALID_REQUEST')) {
        // The session ended on the server (signed out elsewhere, revoked, expired).
        if (this.current?.session.refresh_token === refreshToken) await this.clear();
        return null;
      }
      this.schedule(RETRY_AFTER_FAILURE_MS);
      throw error;
    }
    if (!result.session) return null;
    await this.adopt(result.session, result.user, 'TOKEN_REFRESHED');
    return result.session;
  }

  /**
   * Takes a session handed over in a URL fragment (`#access_token=...&refresh_token=...`),
   * as after an OAuth or email-link redirect. Returns null when the URL carries none.
   */
  async getSessionFromUrl(url: string): Promise<Session | null> {
    const hash = url.includes('#') ? url.slice(url.indexOf('#') + 1) : '';
    const params = new URLSearchParams(hash);
    const accessToken = params.get('access_token');
    const refreshToken = params.get('refresh_token');
    if (!accessToken || !refreshToken) return null;
    const expiresIn = Number(params.get('expires_in') ?? '0');
    const expiresAt = Number(params.get('expires_at') ?? '0') || nowSeconds() + expiresIn;
    const session: Session = {
      access_token: accessToken,
      token_type: 'bearer',
      expires_in: expiresIn,
      expires_at: expiresAt,
      refresh_token: refreshToken,
    };
    const user = await this.http.request<User>(
      'GET',
      '/v1/auth/user',
      undefined,
      { authorization: `Bearer ${accessToken}` },
      { anonymous: true },
    );
    await this.adopt(session, user, 'SIGNED_IN');
    return session;
  }

  /** Stops the background refresh timer (e.g. before a test or a page tears the client down). */
  stopAutoRefresh(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  // ---- internals ---------------------------------------------------------------------

  private async initialize(): Promise<void> {
    const stored = await this.load();
    if (stored) {
      this.current = stored;
      if (stored.session.expires_at - nowSeconds() <= EXPIRY_SKEW_SECONDS) {
        await this.refreshSession().catch(() => null);
      } else {
        this.schedule();
      }
    }
    const location = browserLocation();
    if (this.options.detectSessionInUrl && location && location.hash.includes('access_token=')) {
      try {
        await this.getSessionFromUrl(location.href);
        const g = globalThis as { history?: { replaceState(data: unknown, title: string, url: string): void } };
        g.history?.replaceState(null, '', location.href.split('#')[0]!);
      } catch {
        // A stale or forged fragment is ignored; the app stays signed out.
      }
    }
  }

  /** The token for the next request, refreshed first when it is about to expire. */
  private async accessToken(): Promise<string | null> {
    await this.ready;
    const session = this.current?.session;
    if (!session) return null;
    if (session.expires_at - nowSeconds() > EXPIRY_SKEW_SECONDS) return session.access_token;
    try {
      const fresh = await this.refreshSession();
      return fresh?.access_token ?? null;
    } catch {
      return session.access_token;
    }
  }

  private async adopt(session: Session, user: User, event: AuthChangeEvent): Promise<void> {
    this.current = { session, user };
    await this.persist();
    this.schedule();
    this.emit(event);
  }

  private async clear(): Promise<void> {
    const had = this.current !== null;
    this.current = null;
    this.stopAutoRefresh();
    if (this.options.storage) await this.options.storage.removeItem(this.options.storageKey);
    if (had) this.emit('SIGNED_OUT');
  }

  private schedule(delayMs?: number): void {
    this.stopAutoRefresh();
    if (!this.options.autoRefreshToken || !this.current) return;
    const { expires_at: expiresAt, expires_in: expiresIn } = this.current.session;
    const margin = Math.min(REFRESH_MARGIN_SECONDS, Math.max(1, Math.floor(expiresIn / 4)));
    const delay = delayMs ?? Math.max(0, (expiresAt - margin - nowSeconds()) * 1000);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.refreshSession().catch(() => undefined);
    }, delay);
    // In Node a pending refresh must not keep the process alive.
    (this.timer as { unref?: () => void }).unref?.();
  }

  private async load(): Promise<Stored | null> {
    if (!this.options.storage) return null;
    try {
      const raw = await this.options.storage.getItem(this.options.storageKey);
      if (!raw) return null;
      const parsed = JSON.parse(raw) as Partial<Stored>;
      if (typeof parsed.session?.refresh_token !== 'string' || typeof parsed.user?.id !== 'string') return null;
      return parsed as Stored;
    } catch {
      return null;
    }
  }

  private async persist(): Promise<void> {
    if (!this.options.storage || !this.current) return;
    await this.options.storage.setItem(this.options.storageKey, JSON.stringify(this.current));
  }

  private emit(event: AuthChangeEvent): void {
    const session = this.session;
    for (const listener of [...this.listeners]) {
      try {
        listener(event, session);
      } catch {
        // A failing listener must not break the others or the auth flow.
      }
    }
  }
}

/** localStorage when the environment has a working one, else nothing (memory only). */
export function defaultStorage(): SessionStorage | null {
  try {
    const storage = (globalThis as { localStorage?: SessionStorage }).localStorage;
    if (!storage) return null;
    const probe = '__basalt_probe__';
    storage.setItem(probe, '1');
    storage.removeItem(probe);
    return storage;
  } catch {
    return null;
  }
}
