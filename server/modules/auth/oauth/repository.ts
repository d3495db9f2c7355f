import { fromPostgresError } from '../../../internal/errors.js';
import type { Queryable } from '../../../internal/db.js';

export interface NewOAuthState {
  stateHash: Buffer;
  provider: string;
  codeVerifier: string;
  nonce: string;
  redirectTo: string;
  bindingHash: Buffer;
  ttlSeconds: number;
}

export interface OAuthState {
  provider: string;
  codeVerifier: string;
  nonce: string;
  redirectTo: string;
  bindingHash: Buffer;
  /** False when the row was found but its time was up. */
  live: boolean;
}

interface StateRow {
  provider: string;
  code_verifier: string;
  nonce: string;
  redirect_to: string;
  binding_hash: Buffer;
  live: boolean;
}

/** SQL of basalt.oauth_states: the authorizations in flight. */
export class OAuthRepository {
  constructor(private readonly db: Queryable) {}

  async insertState(state: NewOAuthState): Promise<void> {
    try {
      await this.db.query(
        `INSERT INTO basalt.oauth_states
           (state_hash, provider, code_verifier, nonce, redirect_to, binding_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))`,
        [
          state.stateHash,
          state.provider,
          state.codeVerifier,
          state.nonce,
          state.redirectTo,
          state.bindingHash,
          state.ttlSeconds,
        ],
      );
    } catch (error) {
      throw fromPostgresError(error, 'The OAuth state');
    }
  }

  /**
   * Takes a state out of the table: the DELETE makes it single-use even when two
   * callbacks race, since only one of them gets the row back.
   */
  async consumeState(stateHash: Buffer): Promise<OAuthState | null> {
    try {
      const { rows } = await this.db.query<StateRow>(
        `DELETE FROM basalt.oauth_states WHERE state_hash = $1
         RETURNING provider, code_verifier, nonce, redirect_to, binding_hash, expires_at > now() AS live`,
        [stateHash],
      );
      const row = rows[0];
      if (!row) return null;
      return {
        provider: row.provider,
        codeVerifier: row.code_verifier,
        nonce: row.nonce,
        redirectTo: row.redirect_to,
        bindingHash: row.binding_hash,
        live: row.live,
      };
    } catch (error) {
      throw fromPostgresError(error);
    }
  }

  /** Removes abandoned sign-ins (the user never came back from the provider). */
  async deleteExpired(): Promise<number> {
    try {
      const { rowCount } = await this.db.query(
        `DELETE FROM basalt.oauth_states
         WHERE state_hash IN (SELECT state_hash FROM basalt.oauth_states WHERE expires_at < now() LIMIT 1000)`,
      );
      return rowCount ?? 0;
    } catch (error) {
      throw fromPostgresError(error);
    }
  }
}
