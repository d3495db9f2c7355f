-- Storage quotas and resumable uploads.
--
-- Quotas: a bucket may cap its total bytes and the bytes of each owner (the user who first
-- uploaded an object; an overwrite keeps the owner, so it is charged the size difference).
-- basalt.storage_usage holds the committed totals, kept by a trigger on basalt.objects so
-- that writes made with plain SQL count too; owner '' is the bucket's total row. Bytes of
-- uploads still streaming are reserved on their pending mark (reserved_bytes), so that two
-- uploads can never both squeeze under a limit: a reservation is taken, and a commit is
-- checked, while holding the lock on the bucket's usage row.
ALTER TABLE basalt.buckets
  ADD COLUMN max_total_bytes bigint CHECK (max_total_bytes IS NULL OR max_total_bytes >= 0),
  ADD COLUMN max_bytes_per_user bigint CHECK (max_bytes_per_user IS NULL OR max_bytes_per_user >= 0);

CREATE TABLE basalt.storage_usage (
  bucket text NOT NULL REFERENCES basalt.buckets (name) ON DELETE CASCADE,
  owner text NOT NULL,
  bytes bigint NOT NULL DEFAULT 0,
  objects bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (bucket, owner)
);

ALTER TABLE basalt.storage_pending
  ADD COLUMN bucket text,
  ADD COLUMN owner text,
  ADD COLUMN reserved_bytes bigint NOT NULL DEFAULT 0 CHECK (reserved_bytes >= 0);
CREATE INDEX storage_pending_reserved_idx ON basalt.storage_pending (bucket, owner) WHERE reserved_bytes > 0;

CREATE FUNCTION basalt.storage_usage_add(target_bucket text, target_owner text, delta_bytes bigint, delta_objects bigint)
RETURNS void LANGUAGE sql AS $$
  INSERT INTO basalt.storage_usage AS u (bucket, owner, bytes, objects)
  SELECT target_bucket, o, delta_bytes, delta_objects
    FROM unnest(CASE WHEN target_owner IS NULL OR target_owner = '' THEN ARRAY['']
                     ELSE ARRAY['', target_owner] END) AS o
  ON CONFLICT (bucket, owner) DO UPDATE
    SET bytes = u.bytes + EXCLUDED.bytes, objects = u.objects + EXCLUDED.objects;
$$;

CREATE FUNCTION basalt.storage_usage_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.bucket = NEW.bucket AND OLD.owner IS NOT DISTINCT FROM NEW.owner THEN
    IF NEW.size <> OLD.size THEN
      PERFORM basalt.storage_usage_add(NEW.bucket, NEW.owner, NEW.size - OLD.size, 0);
    END IF;
    RETURN NULL;
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM basalt.storage_usage_add(OLD.bucket, OLD.owner, -OLD.size, -1);
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    PERFORM basalt.storage_usage_add(NEW.bucket, NEW.owner, NEW.size, 1);
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER storage_usage_track AFTER INSERT OR UPDATE OF bucket, owner, size OR DELETE ON basalt.objects
  FOR EACH ROW EXECUTE FUNCTION basalt.storage_usage_track();

-- Objects stored before this migration.
INSERT INTO basalt.storage_usage (bucket, owner, bytes, objects)
SELECT bucket, '', sum(size), count(*) FROM basalt.objects GROUP BY bucket
UNION ALL
SELECT bucket, owner, sum(size), count(*) FROM basalt.objects WHERE owner IS NOT NULL AND owner <> '' GROUP BY bucket, owner;

-- Image transform variants: the bytes of a resized or re-encoded image, cached in the
-- storage backend under `<bucket>/t<hash>`, a hash of the original's storage key (so of its
-- version: an overwrite writes a new key) and of the transform's parameters. A variant is
-- found only through the current key of its original, so a stale one is never served; its
-- row goes with the original's bytes, and the sweeper removes those a crash left behind.
CREATE TABLE basalt.storage_variants (
  storage_key text PRIMARY KEY,
  object_key text NOT NULL,
  params text NOT NULL,
  size bigint NOT NULL CHECK (size >= 0),
  content_type text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX storage_variants_object_key_idx ON basalt.storage_variants (object_key);

-- Resumable (tus) uploads in progress. The state lives here, not on an instance, so any
-- instance goes on with an upload after a dropped connection or a crash. The bytes go to the
-- backend piece by piece under storage_key, which a pending mark (holding the upload's quota
-- reservation) covers until the object row commits; `held` keeps the bytes of an S3 part not
-- yet full, written atomically with `upload_offset`. A lease serialises the appends to one
-- upload across instances; a crashed holder's lease simply runs out.
CREATE TABLE basalt.storage_uploads (
  id text PRIMARY KEY,
  bucket text NOT NULL REFERENCES basalt.buckets (name) ON DELETE CASCADE,
  path text COLLATE "C" NOT NULL,
  storage_key text NOT NULL UNIQUE,
  content_type text NOT NULL,
  upsert boolean NOT NULL DEFAULT false,
  -- The object's owner when it is created: the uploading user, or null for the service key.
  owner text,
  -- Who may go on with the upload: 'user:<id>', 'service', or 'public' (the URL is the secret).
  creator text NOT NULL,
  upload_length bigint NOT NULL CHECK (upload_length >= 0),
  upload_offset bigint NOT NULL DEFAULT 0 CHECK (upload_offset >= 0 AND upload_offset <= upload_length),
  metadata text NOT NULL DEFAULT '',
  backend_state jsonb NOT NULL DEFAULT '{}'::jsonb,
  held bytea,
  lease_token text,
  lease_until timestamptz,
  expires_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX storage_uploads_expires_idx ON basalt.storage_uploads (expires_at);
