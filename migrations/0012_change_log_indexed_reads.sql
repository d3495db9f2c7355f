-- Reading the change log no longer scans all of it. In changes_of_ticks (0007), the
-- branch that finds transactions still open at the first tick compared each change's
-- txid with an array built from the tick's row of the same query, so Postgres could not
-- use the txid index and read every change kept (24 h of them by default) on every read
-- of the feed: tens to hundreds of milliseconds per tick with 100,000 changes, growing
-- with the log. The array is now computed once, before the scan (an uncorrelated
-- subquery), and the lookup is an index scan. The result is the same.
CREATE OR REPLACE FUNCTION basalt.changes_of_ticks(after_tick bigint, upto_tick bigint)
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
  created_at timestamptz
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
         c.old_row, c.new_row, c.created_at
  FROM candidates c JOIN placed p ON p.txid = c.txid
$$;
