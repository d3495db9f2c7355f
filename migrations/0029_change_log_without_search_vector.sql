-- The change log records documents, not their search vector: a searchable collection's rows
-- carry the generated "$search" tsvector (0028), which readers of the log never use and which
-- would make every change row of such a collection several times larger (and its WAL with it).
-- Same trigger as 0025 otherwise; `?` is a key lookup, so other collections pay nothing more.
CREATE OR REPLACE FUNCTION basalt.record_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  row_json jsonb;
  old_json jsonb;
  origin_text text := current_setting('basalt.origin', true);
  row_origin jsonb := NULL;
BEGIN
  IF origin_text IS NOT NULL AND origin_text <> '' THEN
    row_origin := origin_text::jsonb;
  END IF;
  IF TG_OP = 'DELETE' THEN
    row_json := to_jsonb(OLD);
    IF row_json ? '$search' THEN
      row_json := row_json - '$search';
    END IF;
    INSERT INTO basalt.changes (table_schema, table_name, op, row_id, old_row, new_row, origin)
    VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'delete', row_json ->> 'id', row_json, NULL, row_origin);
  ELSIF TG_OP = 'UPDATE' THEN
    row_json := to_jsonb(NEW);
    old_json := to_jsonb(OLD);
    IF row_json ? '$search' THEN
      row_json := row_json - '$search';
      old_json := old_json - '$search';
    END IF;
    INSERT INTO basalt.changes (table_schema, table_name, op, row_id, old_row, new_row, origin)
    VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'update', row_json ->> 'id', old_json, row_json, row_origin);
  ELSE
    row_json := to_jsonb(NEW);
    IF row_json ? '$search' THEN
      row_json := row_json - '$search';
    END IF;
    INSERT INTO basalt.changes (table_schema, table_name, op, row_id, old_row, new_row, origin)
    VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'insert', row_json ->> 'id', NULL, row_json, row_origin);
  END IF;
  RETURN NULL;
END;
$$;
