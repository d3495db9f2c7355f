-- The audit log: who did what to accounts and to the project's configuration. One row per
-- event, written in the transaction of the change it records where there is one, so an
-- event exists exactly when its change does. Not tracked by the change log (it is a record
-- of changes, not a change of its own) and read only through the admin API.
CREATE TABLE basalt.audit_log (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT clock_timestamp(),
  type text NOT NULL,
  -- The account the event is about; no foreign key: the history of a deleted user stays.
  user_id uuid,
  -- {"type": "user", "id": ..., "impersonator"?: "service"} | {"type": "service"} | {"type": "anonymous"}
  actor jsonb NOT NULL,
  ip text,
  user_agent text,
  details jsonb NOT NULL DEFAULT '{}'::jsonb
);
-- Newest first, per user and per type (a prefix filter uses text_pattern_ops), and the prune.
CREATE INDEX audit_log_user_idx ON basalt.audit_log (user_id, id DESC) WHERE user_id IS NOT NULL;
CREATE INDEX audit_log_type_idx ON basalt.audit_log (type text_pattern_ops, id DESC);
CREATE INDEX audit_log_at_idx ON basalt.audit_log (at);

-- A session an admin started as its user ("view as"): who started it. Such a session has
-- no refresh token and refuses sensitive account changes.
ALTER TABLE basalt.sessions ADD COLUMN impersonated_by text;

REVOKE ALL ON basalt.audit_log FROM PUBLIC;
