import type { Database, Queryable } from '../../../internal/db.js';
import { ADVISORY_LOCKS } from '../../../internal/advisory-locks.js';
import { runQuery } from '../../../internal/repository.js';

export interface SigningKeyRow {
  kid: string;
  alg: string;
  public_jwk: Record<string, unknown>;
  private_key: string;
  created_at: Date;
  retired_at: Date | null;
}

/** A key as generated, before the database stamps it. */
export type NewSigningKey = Omit<SigningKeyRow, 'created_at' | 'retired_at'>;

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
    await runQuery(
      this.db.pool,
      `INSERT INTO basalt.instance (key, value) VALUES ('auth_issuer', $1) ON CONFLICT (key) DO NOTHING`,
      [proposed],
    );
    const [row] = await runQuery<{ value: string }>(
      this.db.pool,
      `SELECT value FROM basalt.instance WHERE key = 'auth_issuer'`,
    );
    return row?.value ?? proposed;
  }

  /** The current key and the keys retired less than `horizonSeconds` ago, newest first. */
  async list(horizonSeconds: number): Promise<SigningKeyRow[]> {
    return runQuery<SigningKeyRow>(
      this.db.pool,
      `SELECT * FROM basalt.signing_keys
        WHERE retired_at IS NULL OR retired_at > now() - make_interval(secs => $1)
        ORDER BY created_at DESC`,
      [horizonSeconds],
    );
  }

  /** Creates the first key unless another instance already did; returns whether it inserted. */
  async insertFirst(key: NewSigningKey): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      await runQuery(tx, 'SELECT pg_advisory_xact_lock($1)', [ADVISORY_LOCKS.signingKeys]);
      const existing = await runQuery(tx, `SELECT 1 FROM basalt.signing_keys WHERE retired_at IS NULL`);
      if (existing.length > 0) return false;
      await this.insert(tx, key);
      return true;
    });
  }

  /** Retires the current key and makes `key` the one that signs. */
  async rotate(key: NewSigningKey): Promise<void> {
    await this.db.transaction(async (tx) => {
      await runQuery(tx, 'SELECT pg_advisory_xact_lock($1)', [ADVISORY_LOCKS.signingKeys]);
      await runQuery(tx, `UPDATE basalt.signing_keys SET retired_at = clock_timestamp() WHERE retired_at IS NULL`);
      await this.insert(tx, key);
    });
  }

  private async insert(q: Queryable, key: NewSigningKey): Promise<void> {
    await runQuery(q, `INSERT INTO basalt.signing_keys (kid, alg, public_jwk, private_key) VALUES ($1, $2, $3, $4)`, [
      key.kid,
      key.alg,
      key.public_jwk,
      key.private_key,
    ]);
  }
}
