-- The stamping trigger of collection tables fires only when a write left version or the
-- timestamps wrong. Basalt's own writes already store what the trigger would (an insert
-- takes the column defaults, an update sets version + 1 and now()), so they skip a PL/pgSQL
-- call on every row; a write made with psql that leaves them alone (or sets them wrongly) is
-- stamped exactly as before.
--
-- An insert is right as it stands when version is 1 and updated_at equals created_at (the
-- defaults give both the transaction's time). An update is right when version went up by one,
-- created_at is unchanged and updated_at is the transaction's time.
-- Installs the two stamping triggers on a collection table (used for new collections too).
CREATE OR REPLACE FUNCTION basalt.stamp_documents(target regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format(
    'CREATE TRIGGER basalt_document_stamp_insert BEFORE INSERT ON %s FOR EACH ROW '
    'WHEN (NEW.version IS DISTINCT FROM 1 OR NEW.created_at IS NULL '
    'OR NEW.updated_at IS DISTINCT FROM NEW.created_at) '
    'EXECUTE FUNCTION basalt.document_stamp()',
    target
  );
  EXECUTE format(
    'CREATE TRIGGER basalt_document_stamp_update BEFORE UPDATE ON %s FOR EACH ROW '
    'WHEN (NEW.version IS DISTINCT FROM OLD.version + 1 OR NEW.created_at IS DISTINCT FROM OLD.created_at '
    'OR NEW.updated_at IS DISTINCT FROM now()) '
    'EXECUTE FUNCTION basalt.document_stamp()',
    target
  );
END;
$$;

DO $$
DECLARE
  r record;
BEGIN
  FOR r IN
    SELECT t.oid::regclass AS tbl
    FROM pg_trigger g
    JOIN pg_class t ON t.oid = g.tgrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace
    WHERE n.nspname = 'basalt_data' AND g.tgname = 'basalt_document_stamp' AND NOT g.tgisinternal
  LOOP
    EXECUTE format('DROP TRIGGER basalt_document_stamp ON %s', r.tbl);
    EXECUTE format('SELECT basalt.stamp_documents(%L::regclass)', r.tbl);
  END LOOP;
END;
$$;
