import { randomBytes } from 'node:crypto';
import { Secret, TOTP } from 'otpauth';
import QRCode from 'qrcode';
import type { MfaFactor, MfaVerifyResponse, TotpEnrollment } from '../../../client-sdk/src/wire.js';
import type { AuthConfig } from '../../config.js';
import type { UserCaller, Caller } from '../../internal/caller.js';
import type { Tx } from '../../internal/db.js';
import { AppError } from '../../internal/errors.js';
import { refuseImpersonated, requireService, requireUser } from '../../internal/guards.js';
import type { RuntimeConfig } from '../../internal/platform.js';
import { assertNotBanned, clientIp, iso, type AuthResult, type ClientContext } from './accounts.js';
import { userEvent, type AuthEventSink, type AuthEventType } from './events.js';
import type { RateLimiter } from './rate-limit.js';
import type { AuthRepository, FactorRow, UserRow } from './repository.js';
import type { SessionFilter } from './repository/sessions.js';
import { SecretSealer } from './sealer.js';
import type { SessionIssuer } from './session-issuer.js';
import { tokenHash } from './tokens.js';

/** RFC 6238 as authenticator apps expect it: SHA-1, 6 digits, 30-second steps. */
export const TOTP_SETTINGS = { algorithm: 'SHA1', digits: 6, period: 30 } as const;
/** A code of the step before or after the server's also passes: clocks and typing take time. */
const TOTP_WINDOW = 1;
/** 160 bits, the HMAC-SHA-1 key size RFC 4226 recommends. */
const TOTP_SECRET_BYTES = 20;
export const RECOVERY_CODE_COUNT = 10;
/** Factors per user, verified or not: enough for several devices, not a table to fill. */
const MAX_FACTORS = 10;
/** Lower-case letters and digits without look-alikes (0/o, 1/l/i). */
const RECOVERY_ALPHABET = 'abcdefghjkmnpqrstuvwxyz23456789';

/** Shown as the account's issuer in authenticator apps and passkey prompts. */
export function appName(config: RuntimeConfig): string {
  return config.auth.appName ?? new URL(config.publicUrl).host;
}

/** A recovery code: 10 characters from 31 (about 50 bits), shown as `xxxxx-xxxxx`. */
function newRecoveryCode(): string {
  const bytes = randomBytes(10);
  let code = '';
  // 31 letters: the modulo bias of a byte is below 1% and leaves ~49.5 bits; enough against
  // guessing behind a rate limit, and each code works once.
  for (const byte of bytes) code += RECOVERY_ALPHABET[byte % RECOVERY_ALPHABET.length];
  return `${code.slice(0, 5)}-${code.slice(5)}`;
}

/** How a typed recovery code is compared: case, spaces and dashes do not matter. */
function normalizeRecoveryCode(code: string): string {
  return code.toLowerCase().replace(/[\s-]/g, '');
}

function toFactor(row: FactorRow): MfaFactor {
  return {
    id: row.id,
    type: row.type,
    status: row.status,
    friendly_name: row.friendlyName,
    created_at: row.createdAt.toISOString(),
    verified_at: iso(row.verifiedAt),
    last_used_at: iso(row.lastUsedAt),
  };
}

const WRONG_CODE = (reason: string) =>
  new AppError('INVALID_CREDENTIALS', 'The code is not valid.', { details: { reason } });

export interface MfaServiceDeps {
  config: RuntimeConfig;
  repo: AuthRepository;
  limiter: RateLimiter;
  sessions: SessionIssuer;
  events: AuthEventSink;
}

/**
 * Second factors by TOTP (RFC 6238) and recovery codes: enrolment, verification (which
 * activates a factor), challenges that lift a session to `aal2`, listing and removal.
 *
 * A second factor is only as good as the rules around it: adding one when the user has one
 * already needs `aal2` (or a stolen password could add the thief's own), removing one needs
 * `aal2`, and either change ends the user's other sessions. Each code is accepted once,
 * by one conditional UPDATE of the factor's last used time step, and wrong codes are
 * counted per user and per IP in Postgres (every instance shares the count).
 */
export class MfaService {
  private readonly sealer: SecretSealer;
  private readonly auth: AuthConfig;

  constructor(private readonly deps: MfaServiceDeps) {
    this.auth = deps.config.auth;
    this.sealer = new SecretSealer(this.auth.keyEncryptionKey, 'auth-factors');
  }

  private async event(
    type: AuthEventType,
    userId: string | null,
    context: ClientContext,
    details: Record<string, unknown> = {},
    tx?: Tx,
  ): Promise<void> {
    await userEvent(this.deps.events, type, userId, context, details, tx);
  }

  /** The user behind a caller that may manage factors: signed in, not anonymous, not banned. */
  private async account(caller: Caller, action: string): Promise<{ me: UserCaller; user: UserRow }> {
    const me = requireUser(caller);
    refuseImpersonated(me, action);
    if (me.role === 'anon') {
      throw new AppError('FORBIDDEN', 'An anonymous user cannot add second factors; give the account an email first.');
    }
    const user = await this.deps.repo.users.byId(this.deps.repo.pool, me.uid);
    if (!user) throw new AppError('UNAUTHENTICATED', 'The user no longer exists.');
    assertNotBanned(user);
    return { me, user };
  }

  /** Changing the factors of an account that has one needs that factor proven in this session. */
  async assertMayChangeFactors(me: UserCaller): Promise<void> {
    if (me.aal === 'aal2') return;
    if (await this.deps.repo.factors.hasActive(this.deps.repo.pool, me.uid)) {
      throw new AppError('MFA_REQUIRED', 'Verify a second factor first: this account has one.');
    }
  }

  async enrollTotp(caller: Caller, input: { friendly_name?: string }, context: ClientContext): Promise<TotpEnrollment> {
    const { me, user } = await this.account(caller, 'enrolling a second factor');
    await this.assertMayChangeFactors(me);
    const secret = new Secret({ size: TOTP_SECRET_BYTES });
    const row = await this.deps.repo.transaction(async (tx) => {
      // Abandoned enrolments (an app never scanned) make room for new ones after 10 minutes.
      await this.deps.repo.factors.deleteStaleUnverified(tx, me.uid, 600);
      if ((await this.deps.repo.factors.countFactors(tx, me.uid)) >= MAX_FACTORS) {
        throw new AppError('INVALID_REQUEST', `An account has at most ${MAX_FACTORS} factors; remove one first.`, {
          details: { reason: 'too_many_factors' },
        });
      }
      const inserted = await this.deps.repo.factors.insertFactor(tx, {
        userId: me.uid,
        secret: this.sealer.seal(secret.base32),
        friendlyName: input.friendly_name ?? null,
      });
      await this.event('mfa.totp_enrolled', me.uid, context, { factor_id: inserted.id }, tx);
      return inserted;
    });
    const totp = new TOTP({
      ...TOTP_SETTINGS,
      issuer: appName(this.deps.config),
      label: user.email ?? user.id,
      secret,
    });
    const url = totp.toString();
    return {
      factor_id: row.id,
      secret: secret.base32,
      otpauth_url: url,
      qr_code: `data:image/svg+xml;base64,${Buffer.from(await QRCode.toString(url, { type: 'svg', margin: 1 })).toString('base64')}`,
    };
  }

  /**
   * Activates an enrolled factor with a code from it. The caller's session is replaced by an
   * `aal2` one, every other session of the user ends, and the user gets a new set of
   * recovery codes (any earlier set stops working).
   */
  async verifyTotp(
    caller: Caller,
    input: { factor_id: string; code: string },
    context: ClientContext,
  ): Promise<MfaVerifyResponse> {
    const { me, user } = await this.account(caller, 'verifying a second factor');
    const factor = await this.deps.repo.factors.factor(this.deps.repo.pool, me.uid, input.factor_id);
    if (!factor) throw new AppError('NOT_FOUND', 'No such factor.');
    if (factor.status === 'verified') {
      throw new AppError('INVALID_REQUEST', 'This factor is verified already; use it in a challenge.');
    }
    await this.assertMayChangeFactors(me);
    const codes = Array.from({ length: RECOVERY_CODE_COUNT }, newRecoveryCode);
    const { result, revoked } = await this.withCode(me, factor, input.code, context, async (tx) => {
      await this.deps.repo.factors.replaceRecoveryCodes(
        tx,
        me.uid,
        codes.map((code) => tokenHash(normalizeRecoveryCode(code))),
      );
      await this.event('mfa.totp_verified', me.uid, context, { factor_id: factor.id }, tx);
      return this.stepUp(tx, user, context, { userId: me.uid }, 'mfa_factor_added');
    });
    this.deps.sessions.announce(revoked);
    return { ...result, recovery_codes: codes };
  }

  /** Proves a second factor (a TOTP code or a recovery code): the caller's session is replaced by an `aal2` one. */
  async challenge(
    caller: Caller,
    input: { factor_id?: string; code?: string; recovery_code?: string },
    context: ClientContext,
  ): Promise<AuthResult> {
    const me = requireUser(caller);
    // A challenge starts a session of the user's own (with a refresh token): never from "view as".
    refuseImpersonated(me, 'proving a second factor');
    const byCode = input.factor_id !== undefined || input.code !== undefined;
    const complete = byCode
      ? input.factor_id !== undefined && input.code !== undefined && input.recovery_code === undefined
      : input.recovery_code !== undefined;
    if (!complete) {
      throw new AppError('INVALID_REQUEST', 'Give either "factor_id" and "code", or "recovery_code".');
    }
    const user = await this.deps.repo.users.byId(this.deps.repo.pool, me.uid);
    if (!user) throw new AppError('UNAUTHENTICATED', 'The user no longer exists.');
    assertNotBanned(user);
    const replace = { sessionId: me.sessionId };
    if (byCode) {
      const factor = await this.deps.repo.factors.factor(this.deps.repo.pool, me.uid, input.factor_id!);
      if (!factor || factor.status !== 'verified') throw new AppError('NOT_FOUND', 'No such verified factor.');
      const { result, revoked } = await this.withCode(me, factor, input.code!, context, async (tx) => {
        await this.event('mfa.challenge_succeeded', me.uid, context, { factor_id: factor.id }, tx);
        return this.stepUp(tx, user, context, replace, 'mfa_step_up');
      });
      this.deps.sessions.announce(revoked);
      return result;
    }
    const { result, revoked } = await this.limited(me, context, 'recovery_code', () =>
      this.deps.repo.transaction(async (tx) => {
        const hash = tokenHash(normalizeRecoveryCode(input.recovery_code!));
        if (!(await this.deps.repo.factors.spendRecoveryCode(tx, me.uid, hash))) {
          throw WRONG_CODE('invalid_or_used_recovery_code');
        }
        const remaining = await this.deps.repo.factors.unusedRecoveryCodes(tx, me.uid);
        await this.event('mfa.recovery_code_used', me.uid, context, { remaining }, tx);
        return this.stepUp(tx, user, context, replace, 'mfa_step_up');
      }),
    );
    this.deps.sessions.announce(revoked);
    return result;
  }

  async listFactors(caller: Caller): Promise<{ factors: MfaFactor[]; recovery_codes_left: number }> {
    return this.factorsOf(requireUser(caller).uid);
  }

  /** A user's TOTP factors and unused recovery codes, as their owner or the service key may see them: no secrets. */
  async factorsOf(userId: string): Promise<{ factors: MfaFactor[]; recovery_codes_left: number }> {
    const pool = this.deps.repo.pool;
    const [rows, left] = await Promise.all([
      this.deps.repo.factors.factors(pool, userId),
      this.deps.repo.factors.unusedRecoveryCodes(pool, userId),
    ]);
    return { factors: rows.map(toFactor), recovery_codes_left: left };
  }

  /** Removes a factor (needs `aal2`); every other session of the user ends. */
  async removeFactor(caller: Caller, id: string, context: ClientContext): Promise<void> {
    const me = requireUser(caller);
    refuseImpersonated(me, 'removing a second factor');
    if (me.aal !== 'aal2') throw new AppError('MFA_REQUIRED', 'Removing a factor needs a session verified with one.');
    const revoked = await this.deps.repo.transaction(async (tx) => {
      if (!(await this.deps.repo.factors.deleteFactor(tx, me.uid, id)))
        throw new AppError('NOT_FOUND', 'No such factor.');
      await this.event('mfa.factor_removed', me.uid, context, { factor_id: id }, tx);
      return this.afterFactorRemoved(tx, me, 'mfa_factor_removed');
    });
    this.deps.sessions.announce(revoked);
  }

  /**
   * For a user who lost every factor and every recovery code (the service key only, after
   * the app verified who asks): deletes all their second factors and ends all their sessions.
   */
  async resetByAdmin(caller: Caller, userId: string, context: ClientContext): Promise<{ removed: number }> {
    requireService(caller);
    const { removed, revoked } = await this.deps.repo.transaction(async (tx) => {
      const user = await this.deps.repo.users.byId(tx, userId, true);
      if (!user) throw new AppError('NOT_FOUND', 'No such user.');
      const count = await this.deps.repo.factors.deleteAll(tx, userId);
      await this.deps.events(
        {
          type: 'mfa.factors_reset_by_admin',
          userId,
          by: 'service',
          ip: context.ip,
          userAgent: context.userAgent,
          details: { removed: count },
        },
        { tx },
      );
      return { removed: count, revoked: await this.deps.sessions.revoke(tx, { userId }, 'mfa_reset_by_admin') };
    });
    this.deps.sessions.announce(revoked);
    return { removed };
  }

  /**
   * What every factor removal does next, in its transaction: recovery codes go with the last
   * factor (they stand in for one), and every other session of the user ends.
   */
  async afterFactorRemoved(tx: Tx, me: UserCaller, reason: string): Promise<string[]> {
    if (!(await this.deps.repo.factors.hasActive(tx, me.uid))) {
      await this.deps.repo.factors.deleteRecoveryCodes(tx, me.uid);
    }
    return this.deps.sessions.revoke(tx, { userId: me.uid, exceptSessionId: me.sessionId }, reason);
  }

  /**
   * Ends the sessions `end` names and starts an `aal2` session in the caller's place, in
   * `tx`; the ids revoked are announced by the caller once `tx` committed.
   */
  stepUp(
    tx: Tx,
    user: UserRow,
    context: ClientContext,
    end: SessionFilter,
    reason: string,
  ): Promise<{ result: AuthResult; revoked: string[] }> {
    return this.deps.sessions.stepUp(tx, user, context, end, reason);
  }

  /**
   * Checks a TOTP code against the factor and, if it is good and its time step was not used
   * before, spends the step and runs `then` in the same transaction. Counted against the
   * per-user and per-IP limits; a success gives the per-user count back.
   */
  private async withCode<T>(
    me: UserCaller,
    factor: FactorRow,
    code: string,
    context: ClientContext,
    then: (tx: Tx) => Promise<T>,
  ): Promise<T> {
    return this.limited(me, context, 'totp', () => {
      const step = this.matchingStep(factor, code);
      if (step === null) throw WRONG_CODE('invalid_code');
      return this.deps.repo.transaction(async (tx) => {
        const activating = factor.status === 'unverified';
        if (!(await this.deps.repo.factors.spendStep(tx, factor.id, step, activating))) {
          throw WRONG_CODE('code_already_used');
        }
        return then(tx);
      });
    });
  }

  /** The RFC 6238 time step whose code `code` is, within the window around now; null for none. */
  private matchingStep(factor: FactorRow, code: string): number | null {
    const totp = new TOTP({ ...TOTP_SETTINGS, secret: Secret.fromBase32(this.sealer.open(factor.secret)) });
    const now = Date.now();
    const delta = totp.validate({ token: code, timestamp: now, window: TOTP_WINDOW });
    return delta === null ? null : Math.floor(now / 1000 / TOTP_SETTINGS.period) + delta;
  }

  /**
   * Runs a second-factor attempt under the rate limits: counted before it runs, so however
   * many race, at most the limit of them are evaluated; a success gives the per-user count back.
   */
  private async limited<T>(
    me: UserCaller,
    context: ClientContext,
    kind: 'totp' | 'recovery_code',
    attempt: () => Promise<T>,
  ): Promise<T> {
    const limits = this.auth.rateLimits;
    const perUser = `mfa-failed:user:${me.uid}`;
    await Promise.all([
      this.deps.limiter.consume(`mfa:ip:${clientIp(context)}`, limits.mfaPerIp),
      this.deps.limiter.consume(perUser, limits.mfaFailedPerUser),
    ]);
    try {
      const result = await attempt();
      await this.deps.limiter.refund(perUser);
      return result;
    } catch (error) {
      if (error instanceof AppError && error.code === 'INVALID_CREDENTIALS') {
        await this.event('mfa.challenge_failed', me.uid, context, { kind, reason: error.details?.reason });
      }
      throw error;
    }
  }
}
