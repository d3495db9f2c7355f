import { eq, inArray, lt, sql } from 'drizzle-orm';
import { oauthStates } from '../../../db/schema.js';
import type { Database } from '../../../internal/db.js';
import { mapDatabaseErrors } from '../../../internal/repository.js';

export interface NewOAuthState {
  stateHash: Buffer;
  provider: string;
  codeVerifier: string;
  nonce: string;
  redirectTo: string;
  bindingHash: Buffer;
  ttlSeconds: number;
}

/** A state taken back from the table; `live` is false when it was found but its time was up. */
export type OAuthState = Pick<
  typeof oauthStates.$inferSelect,
  'provider' | 'codeVerifier' | 'nonce' | 'redirectTo' | 'bindingHash'
> & { live: boolean };

/** Abandoned states removed per statement, so one sweep never holds many row locks. */
const EXPIRED_BATCH = 1000;

/** SQL of basalt.oauth_states: the authorizations in flight. */
export class OAuthRepository {
  constructor(private readonly db: Database) {}

  async insertState(state: NewOAuthState): Promise<void> {
    const { ttlSeconds, ...columns } = state;
    await mapDatabaseErrors(
      () =>
        this.db.drizzle
          .insert(oauthStates)
          .values({ ...columns, expiresAt: sql`now() + make_interval(secs => ${ttlSeconds})` }),
      'The OAuth state',
    );
  }

  /**
   * Takes a state out of the table: the DELETE makes it single-use even when two
   * callbacks race, since only one of them gets the row back.
   */
  async consumeState(stateHash: Buffer): Promise<OAuthState | null> {
    const rows = await mapDatabaseErrors(() =>
      this.db.drizzle
        .delete(oauthStates)
        .where(eq(oauthStates.stateHash, stateHash))
        .returning({
          provider: oauthStates.provider,
          codeVerifier: oauthStates.codeVerifier,
          nonce: oauthStates.nonce,
          redirectTo: oauthStates.redirectTo,
          bindingHash: oauthStates.bindingHash,
          live: sql<boolean>`${oauthStates.expiresAt} > now()`,
        }),
    );
    return rows[0] ?? null;
  }

  /** Removes abandoned sign-ins (the user never came back from the provider). */
  async deleteExpired(): Promise<number> {
    const expired = this.db.drizzle
      .select({ stateHash: oauthStates.stateHash })
      .from(oauthStates)
      .where(lt(oauthStates.expiresAt, sql`now()`))
      .limit(EXPIRED_BATCH);
    const { rowCount } = await mapDatabaseErrors(() =>
      this.db.drizzle.delete(oauthStates).where(inArray(oauthStates.stateHash, expired)),
    );
    return rowCount ?? 0;
  }
}
