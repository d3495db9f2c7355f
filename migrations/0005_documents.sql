-- Documents: every collection is a table of its own in the basalt_data schema (created
-- by the admin API), described by a row of basalt.collections.
CREATE SCHEMA IF NOT EXISTS basalt_data;

CREATE TABLE basalt.collections (
  name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$' AND name <> 'batch'),
  -- {read?, create?, update?, delete?}: rule sources, parsed and cached by each instance.
  rules jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(rules) = 'object'),
  -- JSON Schema for documents' data, or NULL.
  schema jsonb,
  -- Declared indexes: field paths, or lists of them.
  indexes jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(indexes) = 'array'),
  -- Grows on every change, so a cache can tell a stale copy.
  revision bigint NOT NULL DEFAULT 1,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Keeps version and timestamps right whoever writes the row (the API, psql, a migration):
-- an insert starts at version 1; every update adds 1, stamps updated_at and keeps
-- created_at.
CREATE OR REPLACE FUNCTION basalt.document_stamp() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    NEW.version := 1;
    NEW.created_at := coalesce(NEW.created_at, now());
    NEW.updated_at := NEW.created_at;
  ELSE
    NEW.version := OLD.version + 1;
    NEW.created_at := OLD.created_at;
    NEW.updated_at := now();
  END IF;
  RETURN NEW;
END;
$$;

-- Tells every instance that a collection's metadata changed, so it drops its cached copy.
CREATE OR REPLACE FUNCTION basalt.collections_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('basalt_collections', OLD.name);
  ELSE
    PERFORM pg_notify('basalt_collections', NEW.name);
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER basalt_collections_notify
AFTER INSERT OR UPDATE OR DELETE ON basalt.collections
FOR EACH ROW EXECUTE FUNCTION basalt.collections_notify();
