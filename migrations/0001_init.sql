-- Basalt's system schema. Every system table lives in "basalt"; user collections get
-- a schema of their own, so a collection name can never shadow a system table.
CREATE SCHEMA IF NOT EXISTS basalt;

-- Facts about this installation (its id, when it was created), kept across restarts.
CREATE TABLE basalt.instance (
  key text PRIMARY KEY,
  value text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO basalt.instance (key, value) VALUES
  ('installation_id', gen_random_uuid()::text),
  ('created_at', now()::text);
