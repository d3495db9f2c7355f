-- The reader side of the change log (0002): how a tick's changes are found, how the
-- leader ticks only when something committed, and durable cursors of consumers.
--
-- A transaction is "not visible" in a snapshot exactly when its xid is at or above the
-- snapshot's xmax or listed among its in-progress xids (xip). Looking rows up by those two
-- index-friendly conditions, rather than scanning from the previous snapshot's xmin, keeps
-- reads cheap while a long transaction anywhere on the server holds xmin back.

-- Every change of the ticks after `after_tick` up to and including `upto_tick`, each with
-- the tick that delivered it, the tick's time (`tick_at`, when the log saw the transaction
-- committed) and `tx_last`, the id of the last change its transaction wrote.
-- Order by (tick, tx_last, id) to read in commit order: ticks are in commit order, and
-- within a tick a transaction that wrote a row after another one committed always has the
-- larger tx_last, so changes to one row never come out of order.
--
-- The changes of a range of ticks are those visible in the last tick's snapshot and not in
-- the first's, so they are found with two index scans whatever the number of ticks. Each
-- transaction is then placed in its tick, the first whose snapshot shows it: the ticks'
-- xmax only grows, so an index on it starts the search where the transaction began.
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
    SELECT x.* FROM a, b, basalt.changes x
    WHERE x.txid = ANY (ARRAY(SELECT pg_snapshot_xip(a.snapshot)))
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

-- Ticks (and wakes readers on 'basalt_ticks') only when a transaction committed since the
-- last tick, unless forced (the heartbeat that keeps lag measurable). Returns the new
-- tick id, or NULL when there was nothing to tick.
CREATE OR REPLACE FUNCTION basalt.tick_if_changed(force boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  last_snapshot pg_snapshot;
  new_id bigint;
BEGIN
  IF NOT force THEN
    SELECT snapshot INTO last_snapshot FROM basalt.change_ticks ORDER BY id DESC LIMIT 1;
    IF last_snapshot IS NOT NULL AND NOT EXISTS (
      SELECT 1 FROM basalt.changes WHERE txid >= pg_snapshot_xmax(last_snapshot)
      UNION ALL
      SELECT 1 FROM basalt.changes WHERE txid = ANY (ARRAY(SELECT pg_snapshot_xip(last_snapshot)))
    ) THEN
      RETURN NULL;
    END IF;
  END IF;
  new_id := basalt.tick();
  PERFORM pg_notify('basalt_ticks', new_id::text);
  RETURN new_id;
END;
$$;

-- A tick that covers every transaction committed before the call: the newest tick when
-- nothing committed since it, else a new one. A reader that has delivered this tick has
-- delivered everything a query run after the call can see (realtime ties snapshots to it).
CREATE OR REPLACE FUNCTION basalt.covering_tick() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  last_id bigint;
  last_snapshot pg_snapshot;
BEGIN
  SELECT id, snapshot INTO last_id, last_snapshot FROM basalt.change_ticks ORDER BY id DESC LIMIT 1;
  IF last_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM basalt.changes WHERE txid >= pg_snapshot_xmax(last_snapshot)
    UNION ALL
    SELECT 1 FROM basalt.changes WHERE txid = ANY (ARRAY(SELECT pg_snapshot_xip(last_snapshot)))
  ) THEN
    RETURN last_id;
  END IF;
  RETURN basalt.tick_if_changed(true);
END;
$$;

-- Durable positions of consumers that must not miss a change across restarts (the
-- functions dispatcher). Pruning never removes ticks a registered consumer still needs.
CREATE TABLE basalt.change_consumers (
  name text PRIMARY KEY,
  tick_id bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX change_ticks_created_at_idx ON basalt.change_ticks (created_at);
CREATE INDEX change_ticks_xmax_idx ON basalt.change_ticks ((pg_snapshot_xmax(snapshot)));
