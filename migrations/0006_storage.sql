-- File storage: buckets, object metadata, and the bookkeeping that keeps metadata and
-- bytes in agreement.
--
-- Bytes live in the backend (local disk or S3) under a key that Basalt generates
-- (`<bucket>/<uuid>`), never under the user's path, so a key is written once and
-- never overwritten. Every key in the backend is covered by a row here at all times:
-- by basalt.storage_pending from before its first byte is written until its object
-- row commits (or after its object row is deleted, until its bytes are gone), and by
-- basalt.objects in between. A key with neither is an orphan the sweeper may delete.
CREATE TABLE basalt.buckets (
  name text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  public boolean NOT NULL DEFAULT false,
  max_file_size bigint CHECK (max_file_size IS NULL OR max_file_size > 0),
  allowed_mime_types text[],
  rules jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE basalt.objects (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  bucket text NOT NULL REFERENCES basalt.buckets (name) ON DELETE RESTRICT,
  -- Byte order ("C"), so listings, cursors and prefix matches are the same on every database.
  path text COLLATE "C" NOT NULL CHECK (octet_length(path) BETWEEN 1 AND 1024),
  storage_key text NOT NULL UNIQUE,
  size bigint NOT NULL CHECK (size >= 0),
  content_type text NOT NULL,
  etag text NOT NULL,
  sha256 text NOT NULL,
  owner text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (bucket, path)
);
-- The unique index on (bucket, path) also serves listings: keyset pages and prefix matches.

-- Uploads and deletions in flight. `touched_at` is refreshed while an upload streams,
-- so a slow upload is never mistaken for an abandoned one.
CREATE TABLE basalt.storage_pending (
  storage_key text PRIMARY KEY,
  reason text NOT NULL CHECK (reason IN ('upload', 'delete')),
  created_at timestamptz NOT NULL DEFAULT now(),
  touched_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX storage_pending_touched_idx ON basalt.storage_pending (touched_at);

-- Uploads, overwrites and deletions reach the change log, realtime and functions.
SELECT basalt.track_changes('basalt.objects');
