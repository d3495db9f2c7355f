import { and, count, desc, eq, gt, isNull, lt, or, sql, type InferSelectModel } from 'drizzle-orm';
import { authFactors, passkeys, recoveryCodes, webauthnChallenges } from '../../../db/schema.js';
import type { Database, Queryable } from '../../../internal/db.js';
import { mapDatabaseErrors } from '../../../internal/repository.js';

export type FactorRow = InferSelectModel<typeof authFactors>;
export type PasskeyRow = InferSelectModel<typeof passkeys>;
export type ChallengePurpose = 'register' | 'signin';

/**
 * basalt.auth_factors, basalt.recovery_codes, basalt.passkeys and basalt.webauthn_challenges:
 * the second factors of users. Each "use once" here is one conditional UPDATE or DELETE,
 * so two requests racing with one code, recovery code or challenge cannot both succeed.
 */
export class FactorRepository {
  constructor(private readonly db: Database) {}

  /** Whether the user has a second factor: a verified TOTP factor or a passkey. */
  async hasActive(q: Queryable, userId: string): Promise<boolean> {
    const rows = await mapDatabaseErrors(() =>
      this.db.builder(q).execute<{ active: boolean }>(
        sql`SELECT EXISTS (SELECT 1 FROM ${authFactors} WHERE ${authFactors.userId} = ${userId} AND ${authFactors.status} = 'verified')
            OR EXISTS (SELECT 1 FROM ${passkeys} WHERE ${passkeys.userId} = ${userId}) AS active`,
      ),
    );
    return rows.rows[0]?.active === true;
  }

  // ---- TOTP --------------------------------------------------------------------------------

  async insertFactor(
    q: Queryable,
    factor: { userId: string; secret: string; friendlyName: string | null },
  ): Promise<FactorRow> {
    const [row] = await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .insert(authFactors)
        .values({ userId: factor.userId, type: 'totp', secret: factor.secret, friendlyName: factor.friendlyName })
        .returning(),
    );
    return row!;
  }

  /** The user's factors, oldest first. */
  async factors(q: Queryable, userId: string): Promise<FactorRow[]> {
    return mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .select()
        .from(authFactors)
        .where(eq(authFactors.userId, userId))
        .orderBy(authFactors.createdAt),
    );
  }

  /** A factor of `userId` (another user's id is simply not found). */
  async factor(q: Queryable, userId: string, id: string): Promise<FactorRow | null> {
    const [row] = await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .select()
        .from(authFactors)
        .where(and(eq(authFactors.id, id), eq(authFactors.userId, userId))),
    );
    return row ?? null;
  }

  /** How many factors the user has, verified or not (enrolment is capped). */
  async countFactors(q: Queryable, userId: string): Promise<number> {
    const [row] = await mapDatabaseErrors(() =>
      this.db.builder(q).select({ n: count() }).from(authFactors).where(eq(authFactors.userId, userId)),
    );
    return row?.n ?? 0;
  }

  /** Deletes the user's unverified factors older than `seconds` (abandoned enrolments). */
  async deleteStaleUnverified(q: Queryable, userId: string, seconds: number): Promise<void> {
    await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .delete(authFactors)
        .where(
          and(
            eq(authFactors.userId, userId),
            eq(authFactors.status, 'unverified'),
            lt(authFactors.createdAt, sql`now() - make_interval(secs => ${seconds})`),
          ),
        ),
    );
  }

  /**
   * Records that a code of time step `step` was accepted, and verifies the factor if it was
   * not yet: only when no code of this step or a later one was accepted before. Returns the
   * factor when it did, null when the step was spent already (a replay, or a concurrent use
   * of the same code that won): the row lock makes racing uses take turns. With `activating`,
   * only while the factor is unverified (else only once it is verified): of two activations
   * racing, one wins and issues the recovery codes.
   */
  async spendStep(q: Queryable, factorId: string, step: number, activating: boolean): Promise<FactorRow | null> {
    const [row] = await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .update(authFactors)
        .set({
          lastUsedStep: step,
          lastUsedAt: sql`now()`,
          status: 'verified',
          verifiedAt: sql`coalesce(${authFactors.verifiedAt}, now())`,
        })
        .where(
          and(
            eq(authFactors.id, factorId),
            or(isNull(authFactors.lastUsedStep), lt(authFactors.lastUsedStep, step)),
            eq(authFactors.status, activating ? 'unverified' : 'verified'),
          ),
        )
        .returning(),
    );
    return row ?? null;
  }

  /** Deletes a factor of `userId`; returns whether there was one. */
  async deleteFactor(q: Queryable, userId: string, id: string): Promise<boolean> {
    const rows = await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .delete(authFactors)
        .where(and(eq(authFactors.id, id), eq(authFactors.userId, userId)))
        .returning({ id: authFactors.id }),
    );
    return rows.length > 0;
  }

  // ---- recovery codes ----------------------------------------------------------------------

  /** Replaces the user's recovery codes with these digests. */
  async replaceRecoveryCodes(q: Queryable, userId: string, hashes: Buffer[]): Promise<void> {
    const orm = this.db.builder(q);
    await mapDatabaseErrors(async () => {
      await orm.delete(recoveryCodes).where(eq(recoveryCodes.userId, userId));
      await orm.insert(recoveryCodes).values(hashes.map((codeHash) => ({ userId, codeHash })));
    });
  }

  /** Spends one unused recovery code of the user; returns whether it was one. */
  async spendRecoveryCode(q: Queryable, userId: string, hash: Buffer): Promise<boolean> {
    const rows = await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .update(recoveryCodes)
        .set({ usedAt: sql`now()` })
        .where(and(eq(recoveryCodes.userId, userId), eq(recoveryCodes.codeHash, hash), isNull(recoveryCodes.usedAt)))
        .returning({ userId: recoveryCodes.userId }),
    );
    return rows.length > 0;
  }

  async unusedRecoveryCodes(q: Queryable, userId: string): Promise<number> {
    const [row] = await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .select({ n: count() })
        .from(recoveryCodes)
        .where(and(eq(recoveryCodes.userId, userId), isNull(recoveryCodes.usedAt))),
    );
    return row?.n ?? 0;
  }

  /** Drops the user's recovery codes once no second factor is left for them to stand in for. */
  async deleteRecoveryCodes(q: Queryable, userId: string): Promise<void> {
    await mapDatabaseErrors(() => this.db.builder(q).delete(recoveryCodes).where(eq(recoveryCodes.userId, userId)));
  }

  // ---- passkeys ----------------------------------------------------------------------------

  async insertPasskey(
    q: Queryable,
    passkey: Pick<
      PasskeyRow,
      'userId' | 'credentialId' | 'publicKey' | 'counter' | 'transports' | 'deviceType' | 'backedUp' | 'name'
    >,
  ): Promise<PasskeyRow> {
    const [row] = await mapDatabaseErrors(
      () => this.db.builder(q).insert(passkeys).values(passkey).returning(),
      'A passkey with this credential id',
    );
    return row!;
  }

  async passkeys(q: Queryable, userId: string): Promise<PasskeyRow[]> {
    return mapDatabaseErrors(() =>
      this.db.builder(q).select().from(passkeys).where(eq(passkeys.userId, userId)).orderBy(desc(passkeys.createdAt)),
    );
  }

  async passkeyByCredentialId(q: Queryable, credentialId: string): Promise<PasskeyRow | null> {
    const [row] = await mapDatabaseErrors(() =>
      this.db.builder(q).select().from(passkeys).where(eq(passkeys.credentialId, credentialId)),
    );
    return row ?? null;
  }

  /**
   * Stores the authenticator's new signature counter, only if it moved forward from the one
   * the check was made against (a counter of 0 means the authenticator keeps none). Two
   * sign-ins racing with one assertion cannot both pass.
   */
  async advanceCounter(q: Queryable, id: string, seen: number, next: number): Promise<boolean> {
    const rows = await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .update(passkeys)
        .set({ counter: next, lastUsedAt: sql`now()` })
        .where(
          and(
            eq(passkeys.id, id),
            eq(passkeys.counter, seen),
            or(gt(sql`${next}::bigint`, passkeys.counter), and(eq(passkeys.counter, 0), sql`${next}::bigint = 0`)),
          ),
        )
        .returning({ id: passkeys.id }),
    );
    return rows.length > 0;
  }

  async deletePasskey(q: Queryable, userId: string, id: string): Promise<boolean> {
    const rows = await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .delete(passkeys)
        .where(and(eq(passkeys.id, id), eq(passkeys.userId, userId)))
        .returning({ id: passkeys.id }),
    );
    return rows.length > 0;
  }

  /** Deletes every second factor of the user (TOTP, passkeys, recovery codes); returns how many factors went. */
  async deleteAll(q: Queryable, userId: string): Promise<number> {
    const orm = this.db.builder(q);
    return mapDatabaseErrors(async () => {
      const totp = await orm
        .delete(authFactors)
        .where(eq(authFactors.userId, userId))
        .returning({ id: authFactors.id });
      const keys = await orm.delete(passkeys).where(eq(passkeys.userId, userId)).returning({ id: passkeys.id });
      await orm.delete(recoveryCodes).where(eq(recoveryCodes.userId, userId));
      return totp.length + keys.length;
    });
  }

  // ---- WebAuthn challenges ---------------------------------------------------------------

  async insertChallenge(
    q: Queryable,
    challenge: {
      challenge: string;
      purpose: ChallengePurpose;
      userId: string | null;
      bound: boolean;
      ttlSeconds: number;
    },
  ): Promise<void> {
    await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .insert(webauthnChallenges)
        .values({
          challenge: challenge.challenge,
          purpose: challenge.purpose,
          userId: challenge.userId,
          bound: challenge.bound,
          expiresAt: sql`now() + make_interval(secs => ${challenge.ttlSeconds})`,
        }),
    );
  }

  /**
   * Spends a challenge: deletes it and returns whom it was for, if it existed, was issued for
   * `purpose` and has not expired. A second use finds nothing.
   */
  async spendChallenge(
    q: Queryable,
    challenge: string,
    purpose: ChallengePurpose,
  ): Promise<{ userId: string | null; bound: boolean } | null> {
    const [row] = await mapDatabaseErrors(() =>
      this.db
        .builder(q)
        .delete(webauthnChallenges)
        .where(
          and(
            eq(webauthnChallenges.challenge, challenge),
            eq(webauthnChallenges.purpose, purpose),
            gt(webauthnChallenges.expiresAt, sql`now()`),
          ),
        )
        .returning({ userId: webauthnChallenges.userId, bound: webauthnChallenges.bound }),
    );
    return row ?? null;
  }

  /** Deletes expired challenges and old unverified factors. */
  async sweep(): Promise<void> {
    await mapDatabaseErrors(async () => {
      await this.db.drizzle.delete(webauthnChallenges).where(lt(webauthnChallenges.expiresAt, sql`now()`));
      await this.db.drizzle
        .delete(authFactors)
        .where(and(eq(authFactors.status, 'unverified'), lt(authFactors.createdAt, sql`now() - interval '1 day'`)));
    });
  }
}
