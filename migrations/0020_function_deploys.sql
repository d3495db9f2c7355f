-- Deployed functions are rows: every deploy is an immutable version (its bundle and what it
-- declared), and one pointer per name says which version is live. The pointer table is in
-- the change log, so the dispatcher sees a deploy, a rollback or an undeploy in commit
-- order with the writes around it, and every instance learns of it through the feed.
CREATE TABLE basalt.function_versions (
  name text NOT NULL,
  version integer NOT NULL CHECK (version > 0),
  kind text NOT NULL,
  export_name text NOT NULL,
  options jsonb NOT NULL,
  -- The entry file: a path of the deployed files, or the file's name in the functions folder.
  entry text NOT NULL,
  bundle text NOT NULL,
  bundle_format text NOT NULL CHECK (bundle_format IN ('cjs', 'esm')),
  bundle_hash text NOT NULL,
  source text NOT NULL CHECK (source IN ('api', 'folder')),
  deployed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, version)
);

-- The live version of each deployed function; no row = not deployed. What the dispatcher
-- needs to route events (kind, export, options) is repeated here, so a change-log row of
-- this table is enough to route by, without reading the bundle.
CREATE TABLE basalt.function_active (
  name text PRIMARY KEY,
  -- The change log names a row by its `id`: the function's name again.
  id text NOT NULL CHECK (id = name),
  version integer NOT NULL,
  kind text NOT NULL,
  export_name text NOT NULL,
  options jsonb NOT NULL,
  changed_at timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (name, version) REFERENCES basalt.function_versions (name, version)
);
SELECT basalt.track_changes('basalt.function_active');

-- The pointers as of the dispatcher's cursor (it reads the log behind the present), saved
-- with the cursor in one transaction.
CREATE TABLE basalt.function_dispatch_versions (
  name text PRIMARY KEY,
  version integer NOT NULL,
  kind text NOT NULL,
  export_name text NOT NULL,
  options jsonb NOT NULL
);

-- Secrets for functions, AES-256-GCM with the server's secrets key; the name is the
-- associated data, so a value cannot be moved to another name.
CREATE TABLE basalt.secrets (
  name text PRIMARY KEY CHECK (name ~ '^[A-Z][A-Z0-9_]{0,63}$'),
  iv bytea NOT NULL,
  ciphertext bytea NOT NULL,
  tag bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- The version that ran (null: runs recorded before versions existed, and dead-lettered events).
ALTER TABLE basalt.function_invocations ADD COLUMN version integer;

-- One row whose revision grows with every secret set or deleted, in the same transaction. It
-- is in the change log (the secrets table is not: no ciphertext is copied there), so every
-- instance learns of a change through its change feed and re-reads the secrets.
CREATE TABLE basalt.secret_revisions (
  id text PRIMARY KEY,
  revision bigint NOT NULL
);
SELECT basalt.track_changes('basalt.secret_revisions');
