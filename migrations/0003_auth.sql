-- Auth: users, their secrets, sessions, refresh tokens, email tokens, signing keys and
-- rate-limit counters.
--
-- basalt.users is tracked by the change log (user.created / user.deleted reach functions),
-- so it holds nothing secret: password hashes live in basalt.user_secrets, which is not
-- tracked and is read only by the auth repository.
CREATE TABLE basalt.users (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email text,
  email_confirmed_at timestamptz,
  is_anonymous boolean NOT NULL DEFAULT false,
  user_metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  app_metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  banned_until timestamptz,
  last_sign_in_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
-- Emails are unique whatever their case: two accounts differing only in case are a trap.
CREATE UNIQUE INDEX users_email_key ON basalt.users (lower(email)) WHERE email IS NOT NULL;
CREATE INDEX users_created_at_idx ON basalt.users (created_at, id);
SELECT basalt.track_changes('basalt.users');

CREATE TABLE basalt.user_secrets (
  user_id uuid PRIMARY KEY REFERENCES basalt.users (id) ON DELETE CASCADE,
  password_hash text,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Accounts at external providers (OAuth / OIDC), linked to a user.
CREATE TABLE basalt.identities (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id uuid NOT NULL REFERENCES basalt.users (id) ON DELETE CASCADE,
  provider text NOT NULL,
  subject text NOT NULL,
  email text,
  identity_data jsonb NOT NULL DEFAULT '{}'::jsonb,
  last_sign_in_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (provider, subject)
);
CREATE INDEX identities_user_id_idx ON basalt.identities (user_id);

CREATE TABLE basalt.sessions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id uuid NOT NULL REFERENCES basalt.users (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now(),
  -- Last refresh: the inactivity timeout counts from here.
  refreshed_at timestamptz NOT NULL DEFAULT now(),
  -- Absolute end of the session, whatever its activity.
  expires_at timestamptz NOT NULL,
  revoked_at timestamptz,
  revoked_reason text,
  user_agent text,
  ip text
);
CREATE INDEX sessions_user_id_idx ON basalt.sessions (user_id);

-- Refresh tokens are stored only as SHA-256 digests. A token is rotated on every use;
-- rotated_at marks it as spent (reuse after the grace window revokes the session).
CREATE TABLE basalt.refresh_tokens (
  token_hash bytea PRIMARY KEY,
  session_id uuid NOT NULL REFERENCES basalt.sessions (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now(),
  rotated_at timestamptz
);
CREATE INDEX refresh_tokens_session_id_idx ON basalt.refresh_tokens (session_id);

-- Revocations, kept apart from sessions (no foreign key) so that deleting a user does not
-- erase the fact that its sessions' access tokens must stop working. Every instance polls
-- this table into an in-process cache; rows older than the longest access-token life go.
CREATE TABLE basalt.session_revocations (
  session_id uuid PRIMARY KEY,
  revoked_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX session_revocations_revoked_at_idx ON basalt.session_revocations (revoked_at);

-- Single-use tokens mailed for confirmation, recovery, magic links and email changes.
CREATE TABLE basalt.email_tokens (
  token_hash bytea PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES basalt.users (id) ON DELETE CASCADE,
  type text NOT NULL CHECK (type IN ('signup', 'recovery', 'magiclink', 'email_change')),
  email text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  used_at timestamptz
);
CREATE INDEX email_tokens_user_id_idx ON basalt.email_tokens (user_id);

-- Access-token signing keys. The private key is encrypted (AES-256-GCM) when
-- BASALT_AUTH_KEY_ENCRYPTION_KEY is set; either way only the server reads this table.
CREATE TABLE basalt.signing_keys (
  kid text PRIMARY KEY,
  alg text NOT NULL,
  public_jwk jsonb NOT NULL,
  private_key text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  -- When a newer key took over signing; the key stays in the JWKS until its tokens expire.
  retired_at timestamptz
);

-- Fixed-window counters shared by all instances.
CREATE TABLE basalt.rate_limits (
  key text NOT NULL,
  window_start timestamptz NOT NULL,
  count integer NOT NULL DEFAULT 0,
  PRIMARY KEY (key, window_start)
);
CREATE INDEX rate_limits_window_start_idx ON basalt.rate_limits (window_start);

REVOKE ALL ON basalt.user_secrets, basalt.signing_keys, basalt.refresh_tokens, basalt.email_tokens FROM PUBLIC;
