import { asc, eq, sql } from 'drizzle-orm';
import { secretRevisions, secrets } from '../../db/schema.js';
import type { Database, Tx } from '../../internal/db.js';
import { mapDatabaseErrors, runQuery } from '../../internal/repository.js';

export interface SealedSecret {
  name: string;
  iv: Buffer;
  ciphertext: Buffer;
  tag: Buffer;
  updatedAt: Date;
}

/** The encrypted secrets table; values are sealed and opened by the caller (secrets.ts). */
export class SecretRepository {
  constructor(private readonly db: Database) {}

  /** Writes a secret; `alsoInTx` joins its transaction (the admin event that records it). */
  async put(secret: Omit<SealedSecret, 'updatedAt'>, alsoInTx?: (tx: Tx) => Promise<void>): Promise<void> {
    await this.db.transaction(async (tx) => {
      await mapDatabaseErrors(() =>
        this.db
          .builder(tx)
          .insert(secrets)
          .values(secret)
          .onConflictDoUpdate({
            target: secrets.name,
            set: { iv: secret.iv, ciphertext: secret.ciphertext, tag: secret.tag, updatedAt: sql`clock_timestamp()` },
          }),
      );
      await this.bumpRevision(tx);
      await alsoInTx?.(tx);
    });
  }

  /** Deletes a secret, if there is one; `alsoInTx` joins its transaction when one went. */
  async delete(name: string, alsoInTx?: (tx: Tx) => Promise<void>): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const rows = await mapDatabaseErrors(() =>
        this.db.builder(tx).delete(secrets).where(eq(secrets.name, name)).returning({ name: secrets.name }),
      );
      if (rows.length === 0) return false;
      await this.bumpRevision(tx);
      await alsoInTx?.(tx);
      return true;
    });
  }

  /** A row change in the change log that tells every instance the secrets changed (migrations/0020). */
  private async bumpRevision(tx: Tx): Promise<void> {
    await mapDatabaseErrors(() =>
      this.db
        .builder(tx)
        .insert(secretRevisions)
        .values({ id: 'secrets', revision: 1 })
        .onConflictDoUpdate({ target: secretRevisions.id, set: { revision: sql`${secretRevisions.revision} + 1` } }),
    );
  }

  async all(): Promise<SealedSecret[]> {
    return mapDatabaseErrors(() => this.db.drizzle.select().from(secrets).orderBy(asc(secrets.name)));
  }

  /** Changes whenever a secret is set or deleted: read every few seconds to pick up changes made elsewhere. */
  async fingerprint(): Promise<string> {
    const [row] = await runQuery<{ fingerprint: string | null }>(
      this.db.pool,
      `SELECT string_agg(name || '@' || extract(epoch FROM updated_at)::text, ',' ORDER BY name) AS fingerprint
         FROM basalt.secrets`,
    );
    return row?.fingerprint ?? '';
  }
}
