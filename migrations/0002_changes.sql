-- The change log: every insert, update and delete on a tracked table is written here
-- by a row trigger, in the same transaction as the change itself.
--
-- Readers never tail this table by id (ids are taken before commit, so a transaction
-- that commits late would slip behind a cursor). Instead, as in PgQ, a ticker records
-- snapshots in basalt.change_ticks; the changes of tick N are those whose transaction
-- is visible in tick N's snapshot and not in tick N-1's. A transaction still open at a
-- tick simply lands in a later tick, so nothing is skipped and nothing stalls behind a
-- long transaction elsewhere on the server.
CREATE TABLE basalt.changes (
  id bigserial PRIMARY KEY,
  txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
  table_schema text NOT NULL,
  table_name text NOT NULL,
  op text NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
  row_id text NOT NULL,
  old_row jsonb,
  new_row jsonb,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX changes_txid_idx ON basalt.changes (txid);
CREATE INDEX changes_created_at_idx ON basalt.changes (created_at);

-- One row per tick. Tick ids are handed out under an advisory lock held until commit,
-- so tick ids commit in order and a reader that walks ticks by id sees every one.
CREATE TABLE basalt.change_ticks (
  id bigint PRIMARY KEY,
  snapshot pg_snapshot NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE OR REPLACE FUNCTION basalt.record_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  row_key text;
BEGIN
  IF TG_OP = 'DELETE' THEN
    row_key := to_jsonb(OLD) ->> 'id';
    INSERT INTO basalt.changes (table_schema, table_name, op, row_id, old_row, new_row)
    VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'delete', row_key, to_jsonb(OLD), NULL);
  ELSIF TG_OP = 'UPDATE' THEN
    row_key := to_jsonb(NEW) ->> 'id';
    INSERT INTO basalt.changes (table_schema, table_name, op, row_id, old_row, new_row)
    VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'update', row_key, to_jsonb(OLD), to_jsonb(NEW));
  ELSE
    row_key := to_jsonb(NEW) ->> 'id';
    INSERT INTO basalt.changes (table_schema, table_name, op, row_id, old_row, new_row)
    VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'insert', row_key, NULL, to_jsonb(NEW));
  END IF;
  -- Only a wake-up hint for readers: identical notifications in one transaction collapse into one.
  PERFORM pg_notify('basalt_changes', '');
  RETURN NULL;
END;
$$;

-- Attaches the change-log trigger to a table (a collection, users, storage objects).
CREATE OR REPLACE FUNCTION basalt.track_changes(target regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('DROP TRIGGER IF EXISTS basalt_record_change ON %s', target);
  EXECUTE format(
    'CREATE TRIGGER basalt_record_change AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION basalt.record_change()',
    target
  );
END;
$$;

-- Records a tick: the snapshot that closes the changes committed since the previous tick.
CREATE OR REPLACE FUNCTION basalt.tick() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  next_id bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(7306355); -- serialises tickers across instances until commit
  SELECT coalesce(max(id), 0) + 1 INTO next_id FROM basalt.change_ticks;
  INSERT INTO basalt.change_ticks (id, snapshot) VALUES (next_id, pg_current_snapshot());
  RETURN next_id;
END;
$$;

INSERT INTO basalt.change_ticks (id, snapshot) VALUES (0, pg_current_snapshot());
