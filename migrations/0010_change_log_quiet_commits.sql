-- The change-log trigger no longer sends NOTIFY. A transaction that has notified takes
-- Postgres' cluster-wide notification lock at commit and holds it through its WAL flush,
-- so every tracked write on the server committed one at a time. Basalt now wakes the
-- ticker itself right after its own commits (outside the write transaction); writes made
-- with plain SQL are found by the ticker's poll (250 ms by default).
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
  RETURN NULL;
END;
$$;
