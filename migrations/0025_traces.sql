-- Traces across functions (docs/tracing.md).
--
-- 1. A change row remembers where it came from: a function's ctx.db / ctx.storage write sets
--    `basalt.origin` (transaction-local) to {trace_id, parent_invocation_id}, and the
--    change-log trigger copies it. The dispatcher puts it on the job it queues, so the run a
--    write triggers shares the writer's trace and names its parent. Writes made anywhere
--    else leave it null: current_setting costs next to nothing, and the jsonb is parsed only
--    for writes that carry one.
ALTER TABLE basalt.changes ADD COLUMN origin jsonb;

CREATE OR REPLACE FUNCTION basalt.record_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  row_json jsonb;
  origin_text text := current_setting('basalt.origin', true);
  row_origin jsonb := NULL;
BEGIN
  IF origin_text IS NOT NULL AND origin_text <> '' THEN
    row_origin := origin_text::jsonb;
  END IF;
  IF TG_OP = 'DELETE' THEN
    row_json := to_jsonb(OLD);
    INSERT INTO basalt.changes (table_schema, table_name, op, row_id, old_row, new_row, origin)
    VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'delete', row_json ->> 'id', row_json, NULL, row_origin);
  ELSIF TG_OP = 'UPDATE' THEN
    row_json := to_jsonb(NEW);
    INSERT INTO basalt.changes (table_schema, table_name, op, row_id, old_row, new_row, origin)
    VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'update', row_json ->> 'id', to_jsonb(OLD), row_json, row_origin);
  ELSE
    row_json := to_jsonb(NEW);
    INSERT INTO basalt.changes (table_schema, table_name, op, row_id, old_row, new_row, origin)
    VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'insert', row_json ->> 'id', NULL, row_json, row_origin);
  END IF;
  RETURN NULL;
END;
$$;

-- The reader returns the origin too (same scan as 0012; one more output column, which a
-- changed result type cannot get through CREATE OR REPLACE).
DROP FUNCTION basalt.changes_of_ticks(bigint, bigint);
CREATE FUNCTION basalt.changes_of_ticks(after_tick bigint, upto_tick bigint)
RETURNS TABLE (
  tick bigint,
  tick_at timestamptz,
  tx_last bigint,
  id bigint,
  txid xid8,
  table_schema text,
  table_name text,
  op text,
  row_id text,
  old_row jsonb,
  new_row jsonb,
  created_at timestamptz,
  origin jsonb
)
LANGUAGE sql STABLE AS $$
  WITH a AS (SELECT snapshot FROM basalt.change_ticks WHERE change_ticks.id = after_tick),
  b AS (SELECT snapshot FROM basalt.change_ticks WHERE change_ticks.id = upto_tick AND upto_tick > after_tick),
  candidates AS (
    SELECT x.* FROM a, b, basalt.changes x
    WHERE x.txid >= pg_snapshot_xmax(a.snapshot) AND x.txid < pg_snapshot_xmax(b.snapshot)
      AND pg_visible_in_snapshot(x.txid, b.snapshot)
    UNION ALL
    SELECT x.* FROM b, basalt.changes x
    WHERE x.txid = ANY (ARRAY(SELECT pg_snapshot_xip(a.snapshot) FROM a))
      AND pg_visible_in_snapshot(x.txid, b.snapshot)
  ),
  transactions AS (
    SELECT c.txid, max(c.id) AS tx_last FROM candidates c GROUP BY c.txid
  ),
  placed AS (
    SELECT tr.txid, tr.tx_last, first.id AS tick, first.created_at AS tick_at
    FROM a, transactions tr
    CROSS JOIN LATERAL (
      SELECT t.id, t.created_at FROM basalt.change_ticks t
      WHERE pg_snapshot_xmax(t.snapshot) > tr.txid AND pg_snapshot_xmax(t.snapshot) >= pg_snapshot_xmax(a.snapshot)
        AND t.id > after_tick AND t.id <= upto_tick
        AND pg_visible_in_snapshot(tr.txid, t.snapshot)
      ORDER BY pg_snapshot_xmax(t.snapshot), t.id
      LIMIT 1
    ) first
  )
  SELECT p.tick, p.tick_at, p.tx_last, c.id, c.txid, c.table_schema, c.table_name, c.op, c.row_id,
         c.old_row, c.new_row, c.created_at, c.origin
  FROM candidates c JOIN placed p ON p.txid = c.txid
$$;

-- 2. Each invocation names its trace and the invocation whose write (or publish) started it
--    (null: an HTTP call, a schedule tick, or a write made outside any function).
--    started_at and duration_ms (0009) place it on the trace's timeline.
ALTER TABLE basalt.function_invocations
  ADD COLUMN trace_id text CHECK (trace_id ~ '^[0-9a-f]{32}$'),
  ADD COLUMN parent_invocation_id uuid;
CREATE INDEX function_invocations_by_trace ON basalt.function_invocations (trace_id) WHERE trace_id IS NOT NULL;
