import {
  generateAuthenticationOptions,
  generateRegistrationOptions,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
  type AuthenticationResponseJSON,
  type AuthenticatorTransportFuture,
  type PublicKeyCredentialCreationOptionsJSON,
  type PublicKeyCredentialRequestOptionsJSON,
  type RegistrationResponseJSON,
} from '@simplewebauthn/server';
import type { MfaFactor, Passkey, PasskeyRegisterResponse } from '../../../client-sdk/src/wire.js';
import type { Config } from '../../config.js';
import type { Caller } from '../../internal/caller.js';
import type { Tx } from '../../internal/db.js';
import { AppError } from '../../internal/errors.js';
import { refuseImpersonated, requireService, requireUser } from '../../internal/guards.js';
import type { RuntimeConfig } from '../../internal/platform.js';
import { assertNotBanned, clientIp, iso, type AuthResult, type ClientContext } from './accounts.js';
import { normalizeEmail } from './email.js';
import { userEvent, type AuthEventSink, type AuthEventType } from './events.js';
import { appName, type MfaService } from './mfa.js';
import type { RateLimiter } from './rate-limit.js';
import type { AuthRepository, PasskeyRow } from './repository.js';
import type { ChallengePurpose } from './repository/factors.js';
import type { SessionIssuer } from './session-issuer.js';

/** How long a ceremony may take, from options to verify: the browser's prompt included. */
const CEREMONY_SECONDS = 300;
const MAX_PASSKEYS = 20;

/** The relying party id: BASALT_PASSKEY_RP_ID, else the host name of the public URL. */
export function passkeyRpId(config: Pick<Config, 'auth' | 'publicUrl'>): string {
  return config.auth.passkeyRpId ?? new URL(config.publicUrl).hostname;
}

/**
 * Origins a ceremony may come from: BASALT_PASSKEY_ORIGINS, else BASALT_CORS_ORIGINS when it
 * lists origins, else the origin of the public URL.
 */
export function passkeyOrigins(config: Pick<Config, 'auth' | 'publicUrl' | 'corsOrigins'>): string[] {
  if (config.auth.passkeyOrigins) return config.auth.passkeyOrigins;
  if (config.corsOrigins !== '*') return config.corsOrigins;
  return [new URL(config.publicUrl).origin];
}

function toPasskey(row: PasskeyRow): Passkey {
  return {
    id: row.id,
    name: row.name,
    device_type: row.deviceType,
    backed_up: row.backedUp,
    transports: row.transports,
    created_at: row.createdAt.toISOString(),
    last_used_at: iso(row.lastUsedAt),
  };
}

/** The WebAuthn user handle of a user: the bytes of its id (no email or name in it). */
function userHandle(userId: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(userId);
}

const NOT_VERIFIED = (reason: string) =>
  new AppError('INVALID_CREDENTIALS', 'The passkey could not be verified.', { details: { reason } });

/** The challenge a credential answers, read from its clientDataJSON; INVALID_REQUEST when unreadable. */
function challengeOf(credential: { response: { clientDataJSON: string } }): string {
  try {
    const client = JSON.parse(Buffer.from(credential.response.clientDataJSON, 'base64url').toString('utf8')) as unknown;
    const challenge = (client as { challenge?: unknown }).challenge;
    if (typeof challenge === 'string' && challenge.length > 0 && challenge.length <= 512) return challenge;
  } catch {
    // Answered below.
  }
  throw new AppError('INVALID_REQUEST', 'The credential carries no readable clientDataJSON challenge.', {
    details: { field: 'credential.response.clientDataJSON' },
  });
}

export interface PasskeyServiceDeps {
  config: RuntimeConfig;
  repo: AuthRepository;
  limiter: RateLimiter;
  sessions: SessionIssuer;
  mfa: MfaService;
  events: AuthEventSink;
}

/**
 * Passkeys (WebAuthn, with @simplewebauthn/server): registration by a signed-in user and
 * sign-in with one, which gives an `aal2` session (a passkey is something the user has,
 * unlocked by something they know or are: user verification is required). Challenges live
 * in Postgres, single use and short-lived, so any instance finishes a ceremony another
 * began; each sign-in must move the authenticator's signature counter forward, so a cloned
 * authenticator that lags behind is refused.
 */
export class PasskeyService {
  constructor(private readonly deps: PasskeyServiceDeps) {}

  private async event(
    type: AuthEventType,
    userId: string | null,
    context: ClientContext,
    details: Record<string, unknown> = {},
    tx?: Tx,
  ): Promise<void> {
    await userEvent(this.deps.events, type, userId, context, details, tx);
  }

  private async spend(
    challenge: string,
    purpose: ChallengePurpose,
  ): Promise<{ userId: string | null; bound: boolean }> {
    const spent = await this.deps.repo.factors.spendChallenge(this.deps.repo.pool, challenge, purpose);
    if (!spent) throw new AppError('INVALID_TOKEN', 'The passkey challenge is unknown, expired or already used.');
    return spent;
  }

  async registerOptions(caller: Caller): Promise<PublicKeyCredentialCreationOptionsJSON> {
    const me = requireUser(caller);
    refuseImpersonated(me, 'registering a passkey');
    if (me.role === 'anon') {
      throw new AppError('FORBIDDEN', 'An anonymous user cannot add passkeys; give the account an email first.');
    }
    await this.deps.mfa.assertMayChangeFactors(me);
    const pool = this.deps.repo.pool;
    const user = await this.deps.repo.users.byId(pool, me.uid);
    if (!user) throw new AppError('UNAUTHENTICATED', 'The user no longer exists.');
    assertNotBanned(user);
    const existing = await this.deps.repo.factors.passkeys(pool, me.uid);
    if (existing.length >= MAX_PASSKEYS) {
      throw new AppError('INVALID_REQUEST', `An account has at most ${MAX_PASSKEYS} passkeys; remove one first.`, {
        details: { reason: 'too_many_passkeys' },
      });
    }
    const options = await generateRegistrationOptions({
      rpName: appName(this.deps.config),
      rpID: passkeyRpId(this.deps.config),
      userName: user.email ?? user.id,
      userID: userHandle(user.id),
      timeout: CEREMONY_SECONDS * 1000,
      attestationType: 'none',
      excludeCredentials: existing.map((row) => ({
        id: row.credentialId,
        transports: row.transports as AuthenticatorTransportFuture[],
      })),
      // Discoverable, so that sign-in needs no email; verified, so that it is a second factor.
      authenticatorSelection: { residentKey: 'required', userVerification: 'required' },
    });
    await this.deps.repo.factors.insertChallenge(pool, {
      challenge: options.challenge,
      purpose: 'register',
      userId: me.uid,
      bound: true,
      ttlSeconds: CEREMONY_SECONDS,
    });
    return options;
  }

  /**
   * Stores the new passkey. It is a new second factor: the caller's session is replaced by
   * an `aal2` one and every other session of the user ends.
   */
  async registerVerify(
    caller: Caller,
    input: { credential: RegistrationResponseJSON; name?: string },
    context: ClientContext,
  ): Promise<PasskeyRegisterResponse> {
    const me = requireUser(caller);
    refuseImpersonated(me, 'registering a passkey');
    const challenge = challengeOf(input.credential);
    const spent = await this.spend(challenge, 'register');
    if (spent.userId !== me.uid)
      throw new AppError('INVALID_TOKEN', 'The passkey challenge was not issued to this user.');
    await this.deps.mfa.assertMayChangeFactors(me);
    let verification;
    try {
      verification = await verifyRegistrationResponse({
        response: input.credential,
        expectedChallenge: challenge,
        expectedOrigin: passkeyOrigins(this.deps.config),
        expectedRPID: passkeyRpId(this.deps.config),
        requireUserVerification: true,
      });
    } catch (error) {
      throw NOT_VERIFIED(error instanceof Error ? error.message : 'invalid');
    }
    if (!verification.verified) throw NOT_VERIFIED('not_verified');
    const info = verification.registrationInfo;
    const { passkey, result, revoked } = await this.deps.repo.transaction(async (tx) => {
      const user = await this.deps.repo.users.byId(tx, me.uid, true);
      if (!user) throw new AppError('UNAUTHENTICATED', 'The user no longer exists.');
      assertNotBanned(user);
      const row = await this.deps.repo.factors.insertPasskey(tx, {
        userId: me.uid,
        credentialId: info.credential.id,
        publicKey: Buffer.from(info.credential.publicKey),
        counter: info.credential.counter,
        transports: info.credential.transports ?? input.credential.response.transports ?? [],
        deviceType: info.credentialDeviceType,
        backedUp: info.credentialBackedUp,
        name: input.name ?? null,
      });
      await this.event('passkey.registered', me.uid, context, { passkey_id: row.id }, tx);
      const stepped = await this.deps.sessions.stepUp(tx, user, context, { userId: me.uid }, 'passkey_added');
      return { passkey: row, ...stepped };
    });
    this.deps.sessions.announce(revoked);
    return { ...result, passkey: toPasskey(passkey) };
  }

  /**
   * Options for a passkey sign-in. With an email, the challenge is bound to that account (a
   * passkey of another account is refused at verify); without, any discoverable passkey of
   * this relying party may answer. The answer, and the refusal at verify, are the same
   * whether or not the email has an account: no credential ids are listed, and a challenge
   * for an unknown email is bound to no account, so any passkey is refused as "another account".
   */
  async signinOptions(
    input: { email?: string },
    context: ClientContext,
  ): Promise<PublicKeyCredentialRequestOptionsJSON> {
    await this.deps.limiter.consume(`mfa:ip:${clientIp(context)}`, this.deps.config.auth.rateLimits.mfaPerIp);
    let userId: string | null = null;
    if (input.email !== undefined) {
      const user = await this.deps.repo.users.byEmail(this.deps.repo.pool, normalizeEmail(input.email));
      userId = user?.id ?? null;
    }
    const options = await generateAuthenticationOptions({
      rpID: passkeyRpId(this.deps.config),
      timeout: CEREMONY_SECONDS * 1000,
      userVerification: 'required',
    });
    await this.deps.repo.factors.insertChallenge(this.deps.repo.pool, {
      challenge: options.challenge,
      purpose: 'signin',
      userId,
      bound: input.email !== undefined,
      ttlSeconds: CEREMONY_SECONDS,
    });
    return options;
  }

  /** Verifies a passkey assertion and starts an `aal2` session for its owner. */
  async signinVerify(input: { credential: AuthenticationResponseJSON }, context: ClientContext): Promise<AuthResult> {
    await this.deps.limiter.consume(`mfa:ip:${clientIp(context)}`, this.deps.config.auth.rateLimits.mfaPerIp);
    const credential = input.credential;
    const challenge = challengeOf(credential);
    const spent = await this.spend(challenge, 'signin');
    const pool = this.deps.repo.pool;
    // Recorded outside any transaction: the refusal rolls the attempt back, not its record.
    const fail = (reason: string, userId: string | null = null) => {
      void this.event('passkey.signin_failed', userId, context, { reason });
      return NOT_VERIFIED(reason);
    };
    const passkey = await this.deps.repo.factors.passkeyByCredentialId(pool, credential.id);
    if (!passkey) throw fail('unknown_credential');
    if (spent.bound && spent.userId !== passkey.userId) throw fail('other_account', spent.userId);
    const handle = credential.response.userHandle;
    if (handle !== undefined && handle !== Buffer.from(userHandle(passkey.userId)).toString('base64url')) {
      throw fail('user_handle_mismatch', passkey.userId);
    }
    let verification;
    try {
      verification = await verifyAuthenticationResponse({
        response: credential,
        expectedChallenge: challenge,
        expectedOrigin: passkeyOrigins(this.deps.config),
        expectedRPID: passkeyRpId(this.deps.config),
        credential: {
          id: passkey.credentialId,
          publicKey: new Uint8Array(passkey.publicKey),
          counter: passkey.counter,
          transports: passkey.transports as AuthenticatorTransportFuture[],
        },
        requireUserVerification: true,
      });
    } catch (error) {
      // Includes a signature counter that did not move forward: a cloned authenticator.
      throw fail(error instanceof Error ? error.message : 'invalid', passkey.userId);
    }
    if (!verification.verified) throw fail('not_verified', passkey.userId);
    const next = verification.authenticationInfo.newCounter;
    const result = await this.deps.repo.transaction(async (tx) => {
      // Conditional on the counter checked above: of two racing uses, one moves it.
      if (!(await this.deps.repo.factors.advanceCounter(tx, passkey.id, passkey.counter, next))) {
        throw fail('counter_not_advanced', passkey.userId);
      }
      const user = await this.deps.repo.users.byId(tx, passkey.userId);
      if (!user) throw fail('no_user');
      assertNotBanned(user);
      await this.event('passkey.signin_succeeded', passkey.userId, context, { passkey_id: passkey.id }, tx);
      return this.deps.sessions.signIn(tx, user, context, 'passkey', { aal: 'aal2' });
    });
    return result;
  }

  async list(caller: Caller): Promise<{ passkeys: Passkey[] }> {
    const me = requireUser(caller);
    const rows = await this.deps.repo.factors.passkeys(this.deps.repo.pool, me.uid);
    return { passkeys: rows.map(toPasskey) };
  }

  /**
   * Every second factor of a user, for support staff (the service key only): TOTP factors,
   * passkeys and how many recovery codes are left. Never a TOTP secret, a credential's
   * public key or a recovery code digest: the row mappers name every field they give.
   */
  async factorsOfUser(
    caller: Caller,
    userId: string,
  ): Promise<{ factors: MfaFactor[]; passkeys: Passkey[]; recovery_codes_left: number }> {
    requireService(caller);
    const pool = this.deps.repo.pool;
    if (!(await this.deps.repo.users.byId(pool, userId))) throw new AppError('NOT_FOUND', 'No such user.');
    const [totp, rows] = await Promise.all([
      this.deps.mfa.factorsOf(userId),
      this.deps.repo.factors.passkeys(pool, userId),
    ]);
    return { factors: totp.factors, passkeys: rows.map(toPasskey), recovery_codes_left: totp.recovery_codes_left };
  }

  /** Removes a passkey (a second factor: needs `aal2`); every other session of the user ends. */
  async remove(caller: Caller, id: string, context: ClientContext): Promise<void> {
    const me = requireUser(caller);
    refuseImpersonated(me, 'removing a passkey');
    if (me.aal !== 'aal2')
      throw new AppError('MFA_REQUIRED', 'Removing a passkey needs a session verified with a second factor.');
    const revoked = await this.deps.repo.transaction(async (tx) => {
      if (!(await this.deps.repo.factors.deletePasskey(tx, me.uid, id))) {
        throw new AppError('NOT_FOUND', 'No such passkey.');
      }
      await this.event('passkey.removed', me.uid, context, { passkey_id: id }, tx);
      return this.deps.mfa.afterFactorRemoved(tx, me, 'passkey_removed');
    });
    this.deps.sessions.announce(revoked);
  }
}
