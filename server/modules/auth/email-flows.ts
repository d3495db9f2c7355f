import type { AuthConfig } from '../../config.js';
import type { Tx } from '../../internal/db.js';
import { AppError } from '../../internal/errors.js';
import type { Logger } from '../../internal/log.js';
import {
  assertNotBanned,
  clientIp,
  isBanned,
  type AuthResult,
  type ClientContext,
  type VerifyType,
} from './accounts.js';
import { userActor } from '../audit/events.js';
import type { AuditLog } from '../audit/service.js';
import { normalizeEmail } from './email.js';
import type { Mailer } from './mailer.js';
import { assertAcceptablePassword, type PasswordHasher } from './passwords.js';
import type { RateLimiter } from './rate-limit.js';
import type { RedirectPolicy } from './redirects.js';
import type { AuthRepository, EmailTokenType, UserRow } from './repository.js';
import type { SessionIssuer } from './session-issuer.js';
import { randomToken, tokenHash } from './tokens.js';

const MAIL_TEXTS: Record<EmailTokenType, { subject: string; intro: string }> = {
  signup: { subject: 'Confirm your email address', intro: 'Confirm your email address by opening this link:' },
  recovery: { subject: 'Reset your password', intro: 'Reset your password by opening this link:' },
  magiclink: { subject: 'Your sign-in link', intro: 'Sign in by opening this link:' },
  email_change: {
    subject: 'Confirm your new email address',
    intro: 'Confirm your new email address with this link:',
  },
};

export interface EmailFlowsDeps {
  config: AuthConfig;
  publicUrl: string;
  repo: AuthRepository;
  hasher: PasswordHasher;
  limiter: RateLimiter;
  mailer: Mailer;
  sessions: SessionIssuer;
  redirects: RedirectPolicy;
  log: Logger;
  audit: AuditLog;
}

/**
 * Everything that goes through a mailbox: confirmation, recovery, magic-link and
 * email-change mails, and spending the token such a mail carried.
 */
export class EmailFlows {
  private readonly config: AuthConfig;
  private readonly repo: AuthRepository;
  /** Work that runs after the answer was sent (see mailIfKnown); awaited by drain(). */
  private readonly background = new Set<Promise<void>>();

  constructor(private readonly deps: EmailFlowsDeps) {
    this.config = deps.config;
    this.repo = deps.repo;
  }

  /** Waits for the work still running after its answer was sent; called when the app closes. */
  async drain(): Promise<void> {
    while (this.background.size > 0) await Promise.allSettled([...this.background]);
  }

  /** Runs `work` without making the caller wait; a failure is logged, as no one is left to answer. */
  private runInBackground(what: string, work: () => Promise<void>): void {
    const task = work()
      .catch((error: unknown) => this.deps.log.error({ err: error }, `auth: ${what} failed`))
      .finally(() => this.background.delete(task));
    this.background.add(task);
  }

  /** The normalized form of an allowed `redirect_to`, or 400 (see RedirectPolicy). */
  allowedRedirect(url: string): string {
    return this.deps.redirects.allowed(url);
  }

  /**
   * Mails `email` a link (and code) that spends a fresh token of `type`, unless the address
   * got a mail within the configured interval. Older unused tokens of that type stop working.
   */
  async mailToken(
    q: Tx,
    user: UserRow,
    type: EmailTokenType,
    email: string,
    redirectTo: string | null,
    /** For a sign-up's own confirmation: the password it chose, kept when the mail is spent. */
    passwordHash: string | null = null,
  ): Promise<void> {
    if (!(await this.mayMail(q, email))) return;
    await this.repo.emailTokens.invalidate(q, user.id, type);
    const token = randomToken();
    await this.repo.emailTokens.insert(q, {
      hash: tokenHash(token),
      userId: user.id,
      type,
      email,
      ttlSeconds: this.config.emailTokenTtlSeconds,
      passwordHash,
    });
    const link = new URL(`${this.deps.publicUrl}/v1/auth/verify`);
    link.searchParams.set('type', type);
    link.searchParams.set('token', token);
    if (redirectTo) link.searchParams.set('redirect_to', redirectTo);
    const minutes = Math.max(1, Math.round(this.config.emailTokenTtlSeconds / 60));
    const text = MAIL_TEXTS[type];
    this.deps.mailer.send({
      to: email,
      subject: text.subject,
      text: [
        text.intro,
        '',
        link.toString(),
        '',
        `Or use this code: ${token}`,
        '',
        `It works once and expires in ${minutes} minute${minutes === 1 ? '' : 's'}. If you did not ask for it, ignore this mail.`,
      ].join('\n'),
    });
  }

  /**
   * Tells the owner of `email` that someone asked to give it to another account, and that
   * nothing changed: the asker sees the same answer as for a free address, and only whoever
   * reads this address learns that it is taken.
   */
  async mailAddressTaken(q: Tx, email: string): Promise<void> {
    if (!(await this.mayMail(q, email))) return;
    this.deps.mailer.send({
      to: email,
      subject: 'Your email address is already in use',
      text: [
        'Someone asked to use this email address for an account, but it already belongs to an account, so nothing was changed.',
        '',
        'If it was you, sign in to that account (or reset its password) instead. If it was not you, ignore this mail.',
      ].join('\n'),
    });
  }

  /** At most one mail per address per configured interval, on every instance together. */
  private async mayMail(q: Tx, email: string): Promise<boolean> {
    const interval = this.config.emailIntervalSeconds;
    return interval <= 0 || this.repo.rateLimits.claimInterval(q, `mail:${email.toLowerCase()}`, interval);
  }

  /** Mails a recovery link when the address has an account; answers the same either way. */
  async recover(input: { email: string; redirect_to?: string }, context: ClientContext): Promise<void> {
    await this.mailIfKnown(input, 'recovery', context);
  }

  async magicLink(input: { email: string; redirect_to?: string }, context: ClientContext): Promise<void> {
    await this.mailIfKnown(input, 'magiclink', context);
  }

  /** Mails a new confirmation link to an address that signed up and has not confirmed yet. */
  async resendConfirmation(input: { email: string; redirect_to?: string }, context: ClientContext): Promise<void> {
    await this.mailIfKnown(input, 'signup', context);
  }

  private async mailIfKnown(
    input: { email: string; redirect_to?: string },
    type: 'recovery' | 'magiclink' | 'signup',
    context: ClientContext,
  ): Promise<void> {
    await this.deps.limiter.consume(`email:ip:${clientIp(context)}`, this.config.rateLimits.emailPerIp);
    const email = normalizeEmail(input.email);
    const redirectTo = this.deps.redirects.target(input.redirect_to);
    // Everything that depends on whether the address has an account runs after the answer,
    // so that the answer's timing cannot tell known addresses from unknown ones.
    this.runInBackground(`${type} mail`, () =>
      this.repo.transaction(async (tx) => {
        const user = await this.repo.users.byEmail(tx, email);
        if (!user || isBanned(user) || user.email === null) return;
        if (type === 'signup' && user.emailConfirmedAt !== null) return;
        await this.mailToken(tx, user, type, user.email, redirectTo);
      }),
    );
  }

  /** Spends a mailed token and starts a session. Recovery sets the new password and ends all other sessions. */
  async verify(
    input: { type: VerifyType; token: string; password?: string },
    context: ClientContext,
  ): Promise<AuthResult> {
    await this.deps.limiter.consume(`verify:ip:${clientIp(context)}`, this.config.rateLimits.verifyPerIp);
    let passwordHash: string | null = null;
    if (input.type === 'recovery') {
      if (input.password === undefined) {
        throw new AppError('INVALID_REQUEST', 'A recovery needs the new "password".', {
          details: { field: 'password' },
        });
      }
      // Checked before the token is spent, so a weak choice does not burn the link.
      assertAcceptablePassword(input.password);
      passwordHash = await this.deps.hasher.hash(input.password);
    }
    const sessions = this.deps.sessions;
    const revoked: string[] = [];
    const result = await this.repo.transaction(async (tx) => {
      const token = await this.repo.emailTokens.consume(tx, tokenHash(input.token), [input.type]);
      if (!token) throw new AppError('INVALID_TOKEN');
      let user = await this.repo.users.byId(tx, token.userId, true);
      if (!user) throw new AppError('INVALID_TOKEN');
      assertNotBanned(user);
      const userId = user.id;
      const audit = (type: 'auth.email_changed' | 'auth.email_confirmed' | 'auth.password_changed', details: object) =>
        this.deps.audit.record(
          { type, userId, actor: userActor(userId), ...context, details: { ...details, via: input.type } },
          { tx },
        );
      const sameEmail = (user.email ?? '').toLowerCase() === token.email.toLowerCase();
      if (token.type === 'email_change') {
        // Cleared, then set: the new address's confirmation time is now, not the old one's.
        // An anonymous user's address waited for this mail; now it is a permanent user.
        const oldEmail = user.email;
        user = await this.repo.users.update(tx, user.id, {
          email: token.email,
          emailConfirmed: false,
          isAnonymous: false,
        });
        user = user && (await this.repo.users.update(tx, user.id, { emailConfirmed: true }));
        await audit('auth.email_changed', { old_email: oldEmail, new_email: token.email });
      } else {
        // The account's address changed since this mail was sent: the mail proves nothing now.
        if (!sameEmail) throw new AppError('INVALID_TOKEN');
        if (user.emailConfirmedAt === null) {
          // The first proof of the address. Until now anyone could have registered it and
          // may hold its password, sessions and linked logins (an OAuth provider that did not
          // verify the address): the owner takes the account over. Only the password this
          // very mail was sent for (a sign-up's own confirmation) or the one this recovery
          // sets survives; every session before this one ends.
          await this.repo.users.setPasswordHash(tx, user.id, passwordHash ?? token.passwordHash);
          await this.repo.users.deleteIdentities(tx, user.id);
          revoked.push(...(await sessions.revoke(tx, { userId: user.id }, 'unverified_account_claimed')));
          await audit('auth.email_confirmed', { email: token.email, sessions_ended: revoked.length });
        }
        user = await this.repo.users.update(tx, user.id, { emailConfirmed: true });
      }
      if (!user) throw new AppError('INVALID_TOKEN');
      if (passwordHash !== null) {
        await this.repo.users.setPasswordHash(tx, user.id, passwordHash);
        revoked.push(...(await sessions.revoke(tx, { userId: user.id }, 'password_reset')));
        await audit('auth.password_changed', { sessions_ended: revoked.length });
      }
      return sessions.signIn(tx, user, context, input.type);
    });
    sessions.announce(revoked);
    return result;
  }
}
