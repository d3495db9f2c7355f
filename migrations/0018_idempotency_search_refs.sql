-- Idempotency keys of writes (/v1/db, /v1/storage): the first request with a key stores its
-- answer here, and a retry with the same key and request gets that answer back instead of
-- running again. The row is inserted `pending` before the write runs, so a concurrent
-- duplicate finds it and waits rather than writing twice. Rows live 24 hours.
CREATE TABLE basalt.idempotency_keys (
  scope text NOT NULL,
  key text NOT NULL,
  request_hash bytea NOT NULL,
  state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
  status integer,
  headers jsonb,
  body bytea,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, key)
);

-- The sweeper deletes by age.
CREATE INDEX idempotency_keys_created_at ON basalt.idempotency_keys (created_at);

-- Collections: full-text search settings ({fields, language}; null = no search) and
-- references ({"<path>": "<collection>"}) that queries may expand.
ALTER TABLE basalt.collections ADD COLUMN search jsonb;
ALTER TABLE basalt.collections ADD COLUMN refs jsonb NOT NULL DEFAULT '{}'::jsonb;
