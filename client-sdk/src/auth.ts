import { BasaltError } from './errors.js';
import { MfaClient, PasskeysClient } from './factors.js';
import { SessionStore, type Stored } from './session-store.js';
import { onPageWake, withLock } from './tabs.js';
import type { HttpTransport, SessionStorage } from './transport.js';
import type { AssuranceLevel, AuthResponse, Session, SessionInfo, User } from './wire.js';

export type {
  AssuranceLevel,
  AuthResponse,
  MfaFactor,
  MfaVerifyResponse,
  Passkey,
  PasskeyRegisterResponse,
  Session,
  SessionInfo,
  TotpEnrollment,
  User,
} from './wire.js';
export { MfaClient, PasskeysClient } from './factors.js';
export { defaultStorage } from './session-store.js';

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
  /**
   * The storage is shared by every tab (or client) using `storageKey`: take turns refreshing
   * and follow each other's changes. Default: when the storage is the browser's localStorage.
   */
  syncTabs?: boolean;
}

/** Refresh this long before expiry, or at three quarters of a very short token life. */
const REFRESH_MARGIN_SECONDS = 60;
/** A token this close to expiry is refreshed before a request uses it. */
const EXPIRY_SKEW_SECONDS = 10;
const RETRY_AFTER_FAILURE_MS = 5_000;
/**
 * A tab handed the lock by another may not have that tab's news yet (browsers carry
 * localStorage and BroadcastChannel between tabs asynchronously): before spending a refresh
 * token nothing newer has been heard of, it waits this long for a message.
 */
const HANDOVER_WAIT_MS = 300;

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
 *
 * Tabs of one origin share the persisted session. Refreshes run under a lock shared by the
 * tabs (Web Locks), and re-read the stored session first: a refresh token is spent by one
 * tab only, the others adopt its result. Every change of the stored session is announced
 * to the other tabs (BroadcastChannel, else the `storage` event), which take it over and
 * fire their own auth events, so signing in or out in one tab signs every tab in or out.
 */
export class AuthClient {
  private current: Stored | null = null;
  private refreshing: Promise<Session | null> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private autoRefresh: boolean;
  /** The stored session is shared with other tabs (or clients): see AuthOptions.syncTabs. */
  private readonly syncTabs: boolean;
  private readonly listeners = new Set<AuthStateListener>();
  /** Changes of the session (in memory and in storage) run one at a time, in call order. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Where the session persists and how the tabs sharing it hear of changes; null: memory only. */
  private readonly store: SessionStore | null;
  /** The newest state this tab knows of (its own write, another tab's message, or storage). */
  private seq = 0;
  /** The newest state this tab has seen in storage itself. */
  private storedSeq = 0;
  /** Called when a newer state arrives (see HANDOVER_WAIT_MS). */
  private onNewer: (() => void) | null = null;
  /** Resolves once the stored session (and any session in the URL) has been loaded. */
  readonly ready: Promise<void>;
  /** TOTP factors, recovery codes and step-up challenges. */
  readonly mfa: MfaClient;
  /** The signed-in user's passkeys. */
  readonly passkeys: PasskeysClient;

  constructor(
    private readonly http: HttpTransport,
    private readonly options: AuthOptions,
  ) {
    this.autoRefresh = options.autoRefreshToken;
    this.store = options.storage ? new SessionStore(options.storage, options.storageKey) : null;
    this.syncTabs = this.store !== null && (options.syncTabs ?? this.store.isLocalStorage());
    http.useAccessToken(() => this.accessToken());
    // A step-up answers with a new session of the same user, which replaces the current one.
    const adopt = async (result: AuthResponse) => {
      if (!result.session) return;
      const event = this.current?.user.id === result.user.id ? 'TOKEN_REFRESHED' : 'SIGNED_IN';
      await this.adopt(result.session, result.user, event);
    };
    this.mfa = new MfaClient(http, adopt);
    this.passkeys = new PasskeysClient(http, adopt);
    this.ready = this.initialize();
    if (this.store && this.syncTabs) {
      this.store.shareWithTabs(
        (state, seq) => void this.serial(async () => this.follow(state, seq)),
        () => void this.sync(),
      );
    }
    // Timers sleep with the page: on wake, catch up with the other tabs and refresh if due.
    onPageWake(() => void (this.syncTabs ? this.sync() : Promise.resolve()).then(() => this.schedule()));
  }

  /** The current session, or null. */
  get session(): Session | null {
    return this.current?.session ?? null;
  }

  /** The signed-in user as last seen, or null. */
  get user(): User | null {
    return this.current?.user ?? null;
  }

  /**
   * The current session's assurance level: `aal2` once a second factor was proven in it,
   * else `aal1`; null when signed out. Read from the access token (the server checks it).
   */
  get aal(): AssuranceLevel | null {
    const token = this.current?.session.access_token;
    if (!token) return null;
    try {
      const payload = token.split('.')[1]!.replace(/-/g, '+').replace(/_/g, '/');
      return (JSON.parse(atob(payload)) as { aal?: unknown }).aal === 'aal2' ? 'aal2' : 'aal1';
    } catch {
      return 'aal1';
    }
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

  /**
   * Signs in with a passkey through the browser's WebAuthn prompt: with `email`, a passkey
   * of that account; without, any passkey the authenticator holds for this site. The
   * session is `aal2`.
   */
  async signInWithPasskey(input: { email?: string } = {}): Promise<AuthResponse> {
    await this.ready;
    return this.passkeys.signIn(input);
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
    if (scope === 'others') {
      if (this.current) await this.http.request('POST', '/v1/auth/signout', { scope });
      return;
    }
    const token = await this.accessToken();
    // Forget the session here (and in the other tabs, and on the realtime socket) before the
    // server ends it, so nothing is left holding a token the server is about to refuse.
    await this.serial(() => this.setState(null, 'SIGNED_OUT'));
    if (!token) return;
    try {
      await this.http.request('POST', '/v1/auth/signout', { scope }, { authorization: `Bearer ${token}` });
    } catch (error) {
      // An already-ended session is signed out. "Everywhere" that the server did not
      // confirm must reach the caller; a local sign-out stands without the server.
      if (scope === 'global' && !(error instanceof BasaltError && error.code === 'UNAUTHENTICATED')) throw error;
    }
  }

  // ---- the user ----------------------------------------------------------------------

  /** The user from the server (not the cached copy). */
  async getUser(): Promise<User> {
    await this.ready;
    const user = await this.http.request<User>('GET', '/v1/auth/user');
    await this.updateStoredUser(user, null);
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
      await this.updateStoredUser(user, 'USER_UPDATED');
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
   * Exchanges the refresh token for a new session. Concurrent callers share one request, and
   * tabs take turns: a rotated refresh token must not be spent twice. When another tab
   * rotated the session meanwhile, its session is taken instead of refreshing again.
   */
  async refreshSession(): Promise<Session | null> {
    await this.ready;
    return this.refresh();
  }

  private refresh(): Promise<Session | null> {
    const asked = this.current?.session.refresh_token;
    this.refreshing ??= this.exclusive((handedOver) => this.doRefresh(asked, handedOver)).finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  /** Runs `task` under the tabs' lock when tabs share the session, else at once. */
  private exclusive<T>(task: (handedOver: boolean) => Promise<T>): Promise<T> {
    return this.syncTabs ? withLock(`basalt.auth.refresh:${this.options.storageKey}`, task) : task(false);
  }

  /** Resolves when a newer state arrives from another tab, or after `ms`. */
  private newerState(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.onNewer = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** Runs under the tabs' lock. `asked` is the refresh token the caller saw. */
  private async doRefresh(asked: string | undefined, handedOver: boolean): Promise<Session | null> {
    const pick = () =>
      this.serial(async () => {
        if (this.syncTabs) {
          // Another tab may have rotated the session (or signed out) while this one waited.
          await this.adoptStored();
          const session = this.current?.session;
          if (session && session.refresh_token !== asked && session.expires_at - nowSeconds() > EXPIRY_SKEW_SECONDS) {
            return session;
          }
        }
        return this.current?.session.refresh_token ?? null;
      });
    let refreshToken = await pick();
    if (handedOver && refreshToken === asked) {
      await this.newerState(HANDOVER_WAIT_MS);
      refreshToken = await pick();
    }
    if (refreshToken === null || refreshToken === undefined || typeof refreshToken === 'object') {
      return refreshToken ?? null;
    }
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
        await this.serial(async () => {
          if (this.current?.session.refresh_token === refreshToken) await this.setState(null, 'SIGNED_OUT');
        });
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
    this.autoRefresh = false;
    this.stopTimer();
  }

  /** Resumes the background refresh after `stopAutoRefresh` (when `autoRefreshToken` allows it). */
  startAutoRefresh(): void {
    this.autoRefresh = this.options.autoRefreshToken;
    this.schedule();
  }

  // ---- internals ---------------------------------------------------------------------

  private async initialize(): Promise<void> {
    // A session restored on load is no change: no event.
    const stored = await this.serial(async () => {
      const loaded = await this.load();
      this.seq = this.storedSeq = loaded?.seq ?? 0;
      return (this.current = loaded);
    });
    if (stored) {
      if (stored.session.expires_at - nowSeconds() <= EXPIRY_SKEW_SECONDS) {
        await this.refresh().catch(() => null);
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
      const fresh = await this.refresh();
      return fresh?.access_token ?? null;
    } catch {
      return session.access_token;
    }
  }

  /** Runs `change` after every change queued before it (they await storage, and must not interleave). */
  private serial<T>(change: () => Promise<T>): Promise<T> {
    const run = this.queue.then(change, change);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private adopt(session: Session, user: User, event: AuthChangeEvent): Promise<void> {
    return this.serial(() => this.setState({ session, user }, event));
  }

  /** Sets the session here and in storage, tells the other tabs, and fires `event`. Call within `serial`. */
  private async setState(next: Stored | null, event: AuthChangeEvent | null): Promise<void> {
    const had = this.current !== null;
    this.seq = Math.max(this.seq + 1, Date.now());
    const state = next && { session: next.session, user: next.user, seq: this.seq };
    this.current = state;
    this.schedule();
    if (this.store) {
      await this.store.save(state, this.seq);
      this.storedSeq = this.seq;
    }
    if (event && (next || had)) this.emit(event);
  }

  /**
   * Takes over another tab's sign-in, refresh, user update or sign-out, unless this tab
   * already knows a newer state. Call within `serial`.
   */
  private follow(next: Stored | null, seq: number): void {
    if (seq < this.seq) return;
    if (seq > this.seq) this.onNewer?.();
    this.seq = seq;
    const current = this.current;
    this.current = next;
    if (!next) {
      this.schedule();
      if (current) this.emit('SIGNED_OUT');
      return;
    }
    if (current && next.session.refresh_token === current.session.refresh_token) {
      if (JSON.stringify(next.user) !== JSON.stringify(current.user)) this.emit('USER_UPDATED');
      return;
    }
    this.schedule();
    this.emit(current?.user.id === next.user.id ? 'TOKEN_REFRESHED' : 'SIGNED_IN');
  }

  /**
   * Follows the stored state. Storage may lag behind a message already taken: an older state
   * is ignored, and so is an empty storage until storage showed everything this tab knows.
   * Call within `serial`.
   */
  private async adoptStored(): Promise<void> {
    const stored = await this.load();
    if (stored) {
      const seq = stored.seq ?? 0;
      this.storedSeq = Math.max(this.storedSeq, seq);
      this.follow(stored, seq);
    } else if (this.storedSeq >= this.seq) {
      this.follow(null, this.seq);
    }
  }

  /** Another tab changed the stored session (or the page woke up): follow it. */
  private sync(): Promise<void> {
    return this.serial(() => this.adoptStored());
  }

  /** Keeps a fresher copy of the user, on the newest session known (another tab may have stored one). */
  private updateStoredUser(user: User, event: AuthChangeEvent | null): Promise<void> {
    // Under the lock, as a refresh: a write must not put back a session rotated meanwhile.
    return this.exclusive(async (handedOver) => {
      if (handedOver) await this.newerState(HANDOVER_WAIT_MS);
      await this.serial(async () => {
        if (this.syncTabs) await this.adoptStored();
        if (this.current) await this.setState({ ...this.current, user }, event);
      });
    });
  }

  private stopTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(delayMs?: number): void {
    this.stopTimer();
    if (!this.autoRefresh || !this.current) return;
    const { expires_at: expiresAt, expires_in: expiresIn } = this.current.session;
    const margin = Math.min(REFRESH_MARGIN_SECONDS, Math.max(1, Math.floor(expiresIn / 4)));
    const delay = delayMs ?? Math.max(0, (expiresAt - margin - nowSeconds()) * 1000);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.refresh().catch(() => undefined);
    }, delay);
    // In Node a pending refresh must not keep the process alive.
    (this.timer as { unref?: () => void }).unref?.();
  }

  private load(): Promise<Stored | null> {
    return this.store?.load() ?? Promise.resolve(null);
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
