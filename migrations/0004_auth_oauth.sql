-- OAuth / OpenID Connect sign-in: one row per authorization in flight, between
-- GET /v1/auth/authorize and GET /v1/auth/callback. A row is deleted when its callback
-- arrives (so a state works once) and is useless after expires_at.
--
-- Only a SHA-256 digest of the state is kept, like the browser-binding secret, so that
-- reading this table does not let anyone complete someone else's sign-in.
CREATE TABLE basalt.oauth_states (
  state_hash bytea PRIMARY KEY,
  provider text NOT NULL,
  -- PKCE (RFC 7636): sent to the token endpoint, proves the code was asked for by us.
  code_verifier text NOT NULL,
  -- Echoed in the ID token; binds the token to this authorization.
  nonce text NOT NULL,
  redirect_to text NOT NULL,
  -- Digest of the secret set as a cookie in the browser that started the sign-in.
  binding_hash bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE INDEX oauth_states_expires_at_idx ON basalt.oauth_states (expires_at);

REVOKE ALL ON basalt.oauth_states FROM PUBLIC;
