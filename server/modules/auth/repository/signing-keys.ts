import { desc, eq, gt, isNull, or, sql, type InferSelectModel } from 'drizzle-orm';
import { instanceInfo, signingKeys } from '../../../db/schema.js';
import type { Database, Queryable } from '../../../internal/db.js';
import { ADVISORY_LOCKS } from '../../../internal/advisory-locks.js';
import { mapDatabaseErrors, runQuery } from '../../../internal/repository.js';

export type SigningKeyRow = InferSelectModel<typeof signingKeys>;

/** A key as generated, before the database stamps it. */
export type NewSigningKey = Pick<SigningKeyRow, 'kid' | 'alg' | 'publicJwk' | 'privateKey'>;

const ISSUER_KEY = 'auth_issuer';

/**
 * What makes access tokens of one database valid on all its instances: the signing keys
 * (basalt.signing_keys) and the issuer they name (basalt.instance).
 */
export class SigningKeyRepository {
  constructor(private readonly db: Database) {}

  /**
   * The access tokens' issuer of this database: `proposed` if none is stored yet (the first
   * start), else the stored one. Two statements, so that an instance that loses the race
   * to store it reads the winner's, committed after this statement's snapshot began.
   */
  async issuer(proposed: string): Promise<string> {
    const orm = this.db.drizzle;
    const [row] = await mapDatabaseErrors(async () => {
      await orm.insert(instanceInfo).values({ key: ISSUER_KEY, value: proposed }).onConflictDoNothing();
      return orm.select({ value: instanceInfo.value }).from(instanceInfo).where(eq(instanceInfo.key, ISSUER_KEY));
    });
    return row?.value ?? proposed;
  }

  /** The current key and the keys retired less than `horizonSeconds` ago, newest first. */
  async list(horizonSeconds: number): Promise<SigningKeyRow[]> {
    return mapDatabaseErrors(() =>
      this.db.drizzle
        .select()
        .from(signingKeys)
        .where(
          or(
            isNull(signingKeys.retiredAt),
            gt(signingKeys.retiredAt, sql`now() - make_interval(secs => ${horizonSeconds})`),
          ),
        )
        .orderBy(desc(signingKeys.createdAt)),
    );
  }

  /** Creates the first key unless another instance already did; returns whether it inserted. */
  async insertFirst(key: NewSigningKey): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      await runQuery(tx, 'SELECT pg_advisory_xact_lock($1)', [ADVISORY_LOCKS.signingKeys]);
      const current = await mapDatabaseErrors(() =>
        this.db.builder(tx).select({ kid: signingKeys.kid }).from(signingKeys).where(isNull(signingKeys.retiredAt)),
      );
      if (current.length > 0) return false;
      await this.insert(tx, key);
      return true;
    });
  }

  /** Retires the current key and makes `key` the one that signs. */
  async rotate(key: NewSigningKey): Promise<void> {
    await this.db.transaction(async (tx) => {
      await runQuery(tx, 'SELECT pg_advisory_xact_lock($1)', [ADVISORY_LOCKS.signingKeys]);
      await mapDatabaseErrors(() =>
        this.db
          .builder(tx)
          .update(signingKeys)
          .set({ retiredAt: sql`clock_timestamp()` })
          .where(isNull(signingKeys.retiredAt)),
      );
      await this.insert(tx, key);
    });
  }

  private async insert(q: Queryable, key: NewSigningKey): Promise<void> {
    await mapDatabaseErrors(() => this.db.builder(q).insert(signingKeys).values(key));
  }
}
