-- Second factors: the assurance level of a session, TOTP factors with their recovery codes,
-- passkeys (WebAuthn credentials) and the single-use challenges of WebAuthn ceremonies.
-- None of these tables is tracked by the change log: they hold secrets or their digests.

-- aal1: a first factor only (password, mailed link, OAuth, anonymous); aal2: a second factor
-- (a TOTP code, a recovery code or a passkey) was proven. A refresh keeps the level.
ALTER TABLE basalt.sessions
  ADD COLUMN aal text NOT NULL DEFAULT 'aal1' CHECK (aal IN ('aal1', 'aal2'));

-- TOTP factors. `secret` is sealed with BASALT_AUTH_KEY_ENCRYPTION_KEY when it is set.
-- `last_used_step` is the RFC 6238 time step of the last code accepted: a code of that
-- step or an earlier one is refused, so each code is accepted once.
CREATE TABLE basalt.auth_factors (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id uuid NOT NULL REFERENCES basalt.users (id) ON DELETE CASCADE,
  type text NOT NULL CHECK (type IN ('totp')),
  status text NOT NULL DEFAULT 'unverified' CHECK (status IN ('unverified', 'verified')),
  friendly_name text,
  secret text NOT NULL,
  last_used_step bigint,
  created_at timestamptz NOT NULL DEFAULT now(),
  verified_at timestamptz,
  last_used_at timestamptz
);
CREATE INDEX auth_factors_user_id_idx ON basalt.auth_factors (user_id);

-- Recovery codes, stored only as SHA-256 digests; each one works once.
CREATE TABLE basalt.recovery_codes (
  user_id uuid NOT NULL REFERENCES basalt.users (id) ON DELETE CASCADE,
  code_hash bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  used_at timestamptz,
  PRIMARY KEY (user_id, code_hash)
);

-- Passkeys: the credential id (base64url) is unique across all users.
CREATE TABLE basalt.passkeys (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id uuid NOT NULL REFERENCES basalt.users (id) ON DELETE CASCADE,
  credential_id text NOT NULL UNIQUE,
  public_key bytea NOT NULL,
  counter bigint NOT NULL DEFAULT 0,
  transports text[] NOT NULL DEFAULT '{}',
  device_type text NOT NULL,
  backed_up boolean NOT NULL DEFAULT false,
  name text,
  created_at timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz
);
CREATE INDEX passkeys_user_id_idx ON basalt.passkeys (user_id);

-- WebAuthn challenges, kept server-side so any instance can finish a ceremony another began;
-- deleted when spent (single use) and swept once expired. `user_id` is the registering
-- user, or the account a sign-in was asked for. A sign-in asked for an email is `bound`:
-- only a passkey of `user_id` answers it, and none when the email has no account (null).
-- Unbound sign-ins accept any discoverable credential.
CREATE TABLE basalt.webauthn_challenges (
  challenge text PRIMARY KEY,
  purpose text NOT NULL CHECK (purpose IN ('register', 'signin')),
  user_id uuid REFERENCES basalt.users (id) ON DELETE CASCADE,
  bound boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE INDEX webauthn_challenges_expires_at_idx ON basalt.webauthn_challenges (expires_at);
