import type { Database, Queryable, Tx } from '../../internal/db.js';
import { EmailTokenRepository } from './repository/email-tokens.js';
import { FactorRepository } from './repository/factors.js';
import { RateLimitRepository } from './repository/rate-limits.js';
import { RevocationRepository } from './repository/revocations.js';
import { SessionRepository } from './repository/sessions.js';
import { SigningKeyRepository } from './repository/signing-keys.js';
import { UserRepository } from './repository/users.js';

export type { EmailTokenType } from './repository/email-tokens.js';
export type { FactorRow, PasskeyRow } from './repository/factors.js';
export type { SessionFilter, SessionRow } from './repository/sessions.js';
export type { UserRow } from './repository/users.js';

/**
 * All SQL of the auth module, one repository per family of tables (in repository/), with
 * the transactions that span them. Every method maps Postgres errors onto the catalogue.
 */
export class AuthRepository {
  readonly users: UserRepository;
  readonly sessions: SessionRepository;
  readonly revocations: RevocationRepository;
  readonly emailTokens: EmailTokenRepository;
  readonly rateLimits: RateLimitRepository;
  readonly signingKeys: SigningKeyRepository;
  readonly factors: FactorRepository;

  constructor(private readonly db: Database) {
    this.users = new UserRepository(db);
    this.revocations = new RevocationRepository(db);
    this.sessions = new SessionRepository(db, this.revocations);
    this.emailTokens = new EmailTokenRepository(db);
    this.rateLimits = new RateLimitRepository(db);
    this.signingKeys = new SigningKeyRepository(db);
    this.factors = new FactorRepository(db);
  }

  get pool(): Queryable {
    return this.db.pool;
  }

  transaction<T>(work: (tx: Tx) => Promise<T>): Promise<T> {
    return this.db.transaction(work);
  }

  /** Deletes what can no longer matter: old counters, spent tokens and challenges, ended sessions' tokens. */
  async sweep(horizonSeconds: number): Promise<void> {
    await this.rateLimits.sweep();
    await this.emailTokens.sweep();
    await this.revocations.sweep(horizonSeconds);
    await this.sessions.sweep(horizonSeconds);
    await this.factors.sweep();
  }
}
