import type { TokenVerifier } from '../../internal/caller.js';
import { IdleBackoff } from '../../internal/idle-backoff.js';
import type { ServerModule } from '../../internal/module.js';
import type { Platform } from '../../internal/platform.js';
import { ANONYMOUS_ACTOR, SERVICE_ACTOR, userActor } from '../audit/events.js';
import { AuditRepository } from '../audit/repository.js';
import { AuditLog } from '../audit/service.js';
import { type AuthEvent, type AuthEventSink } from './events.js';
import { factorRoutes } from './factor-routes.js';
import { Mailer } from './mailer.js';
import { MfaService } from './mfa.js';
import { OAuthRepository } from './oauth/repository.js';
import { oauthRoutes } from './oauth/routes.js';
import { OAuthService } from './oauth/service.js';
import { PasskeyService } from './passkeys.js';
import { PasswordHasher } from './passwords.js';
import { RateLimiter } from './rate-limit.js';
import { AdminService } from './admin-service.js';
import { EmailFlows } from './email-flows.js';
import { RedirectPolicy } from './redirects.js';
import { AuthRepository } from './repository.js';
import { RevocationCache } from './revocations.js';
import { authRoutes } from './routes.js';
import { SessionIssuer } from './session-issuer.js';
import { SessionService } from './session-service.js';
import { AccessTokens, SigningKeys } from './tokens.js';

/**
 * The auth module: sign-up, sessions, email flows, admin users and OAuth. start() loads
 * signing keys and revocations, then keeps them fresh.
 */
export interface AuthModule extends ServerModule {
  /** Accounts and sessions: what the request context (verifier) and the OAuth flow call. */
  service: SessionService;
  /** Confirmation, recovery, magic-link and email-change mails, and spending their tokens. */
  emailFlows: EmailFlows;
  /** The admin users API and key rotation. */
  admin: AdminService;
  /** Verifies the access tokens of requests and websockets. */
  verifier: TokenVerifier;
  /** TOTP factors, recovery codes and step-up challenges. */
  mfa: MfaService;
  /** Passkeys: registration, sign-in, removal. */
  passkeys: PasskeyService;
}

const SWEEP_EVERY_MS = 10 * 60 * 1000;
const KEY_RELOAD_EVERY_MS = 10_000;
/**
 * While no key changes, reloads slow down to this. A rotation on another instance then
 * reaches this one's signing within a minute (tokens with the new kid verify at once: an
 * unknown kid reloads), and JWKS answers reload when older than 10 s.
 */
const KEY_RELOAD_IDLE_MS = 60_000;

/**
 * `audit`: the app's audit log; a module built on its own (tools, tests) writes to the same
 * table through its own.
 */
export function buildAuthModule(platform: Platform, deps: { audit?: AuditLog } = {}): AuthModule {
  const audit =
    deps.audit ??
    new AuditLog(new AuditRepository(platform.db), {
      log: platform.log,
      retentionDays: platform.config.auditRetentionDays,
    });
  const { config, log } = platform;
  const auth = config.auth;
  const repo = new AuthRepository(platform.db);
  const keys = new SigningKeys(repo, {
    accessTokenTtlSeconds: auth.accessTokenTtlSeconds,
    encryptionKey: auth.keyEncryptionKey,
    log,
  });
  // A revocation matters as long as an access token of the session can still be valid.
  const revocations = new RevocationCache(repo, {
    pollMs: auth.revocationPollMs,
    horizonSeconds: auth.accessTokenTtlSeconds + 60,
    log,
    databaseUrl: config.databaseUrl,
  });
  const mailer = new Mailer({ smtpUrl: config.smtpUrl, from: auth.mailFrom, log });
  // Until start() reads the issuer stored in the database: this instance's own address.
  const ownIssuer = `${config.publicUrl}/v1/auth`;
  const tokens = new AccessTokens(keys, { issuer: ownIssuer, ttlSeconds: auth.accessTokenTtlSeconds });
  const hasher = new PasswordHasher({ memoryKib: auth.argon2MemoryKib, timeCost: auth.argon2TimeCost });
  const limiter = new RateLimiter(repo, auth.rateLimits.windowSeconds);
  const redirects = new RedirectPolicy({ publicUrl: config.publicUrl, redirectUrls: auth.redirectUrls });
  const sessions = new SessionIssuer({
    config: auth,
    repo,
    tokens,
    revocations,
    audit,
    onSignIn: (userId) => platform.usage.activeUser(userId),
  });
  const emailFlows = new EmailFlows({
    config: auth,
    publicUrl: config.publicUrl,
    repo,
    hasher,
    limiter,
    mailer,
    sessions,
    redirects,
    log,
    audit,
  });
  const service = new SessionService({
    config: auth,
    repo,
    hasher,
    keys,
    tokens,
    revocations,
    limiter,
    sessions,
    emailFlows,
    redirects,
    audit,
  });
  const admin = new AdminService({ repo, hasher, keys, sessions, audit });
  const events = auditedAuthEvents(audit);
  const mfa = new MfaService({ config, repo, limiter, sessions, events });
  const passkeys = new PasskeyService({ config, repo, limiter, sessions, mfa, events });
  const oauth = new OAuthService({
    config,
    repository: new OAuthRepository(platform.db),
    auth: service,
    limiter,
    log,
  });

  let sweep: NodeJS.Timeout | null = null;
  const reload = new IdleBackoff({
    minMs: KEY_RELOAD_EVERY_MS,
    maxMs: KEY_RELOAD_IDLE_MS,
    run: async () => {
      const before = keys.fingerprint;
      await keys.load();
      return keys.fingerprint !== before;
    },
    onError: (error) => log.warn({ err: error }, 'could not reload signing keys'),
  });
  return {
    service,
    emailFlows,
    admin,
    verifier: service.verifier,
    mfa,
    passkeys,
    routes: async (app) => {
      await app.register(authRoutes, { service, emailFlows, admin });
      await app.register(oauthRoutes, { oauth });
      await app.register(factorRoutes, { mfa, passkeys });
    },
    async start() {
      // Instances of one database accept each other's tokens only if they name the same
      // issuer, and their addresses differ (ports, hosts): the first start stores its own.
      const issuer = await repo.signingKeys.issuer(ownIssuer);
      tokens.useIssuer(issuer);
      if (issuer !== ownIssuer) {
        log.warn(
          `access tokens name the issuer ${issuer}, stored in the database when it was first used; this instance's public URL is ${config.publicUrl} (BASALT_PUBLIC_URL). Tokens are valid on every instance either way, but links in mails, OAuth callbacks and signed URLs use ${config.publicUrl}: give every instance the one URL clients use (docs/deployment.md#one-public-url)`,
        );
      }
      await Promise.all([keys.load(), revocations.poll()]);
      revocations.start();
      reload.start();
      sweep = setInterval(() => {
        repo
          .sweep(auth.accessTokenTtlSeconds + 60)
          .catch((error: unknown) => log.warn({ err: error }, 'auth housekeeping failed'));
      }, SWEEP_EVERY_MS);
      sweep.unref();
    },
    async stop() {
      reload.stop();
      if (sweep) clearInterval(sweep);
      sweep = null;
      await revocations.stop();
      // Mails decided after their answer was sent are queued before the mailer closes.
      await emailFlows.drain();
      await mailer.close();
    },
  };
}

/** Second-factor events into the audit log, in the change's transaction when given one. */
function auditedAuthEvents(audit: AuditLog): AuthEventSink {
  const actor = (event: AuthEvent) =>
    event.by === 'service' ? SERVICE_ACTOR : event.userId === null ? ANONYMOUS_ACTOR : userActor(event.userId);
  return async (event, options) => {
    await audit.record(
      {
        type: event.type,
        userId: event.userId,
        actor: actor(event),
        ip: event.ip,
        userAgent: event.userAgent,
        details: event.details,
      },
      options,
    );
  };
}
