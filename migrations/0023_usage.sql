-- The usage meter (docs/usage.md): counters per hour, added to by every instance every few
-- seconds (value = value + delta), never one row per request. Days are summed from hours
-- when read. Rows older than 90 days are pruned.
CREATE TABLE basalt.usage_hours (
  hour timestamptz PRIMARY KEY,
  document_reads bigint NOT NULL DEFAULT 0,
  document_writes bigint NOT NULL DEFAULT 0,
  storage_bytes_in bigint NOT NULL DEFAULT 0,
  storage_bytes_out bigint NOT NULL DEFAULT 0,
  -- The total size of the stored objects, last measured in this hour (null: not measured).
  storage_bytes_stored bigint,
  realtime_messages bigint NOT NULL DEFAULT 0
);

CREATE TABLE basalt.usage_function_hours (
  hour timestamptz NOT NULL,
  function_name text NOT NULL,
  invocations bigint NOT NULL DEFAULT 0,
  errors bigint NOT NULL DEFAULT 0,
  cold_starts bigint NOT NULL DEFAULT 0,
  duration_ms bigint NOT NULL DEFAULT 0,
  gb_seconds double precision NOT NULL DEFAULT 0,
  PRIMARY KEY (hour, function_name)
);

-- Each instance's own peak of open websockets in the hour; the hour's peak is their sum.
CREATE TABLE basalt.usage_connection_peaks (
  hour timestamptz NOT NULL,
  instance_id uuid NOT NULL,
  peak integer NOT NULL,
  PRIMARY KEY (hour, instance_id)
);

-- Who was active in the hour: distinct users are counted over any range by reading these.
CREATE TABLE basalt.usage_active_users (
  hour timestamptz NOT NULL,
  user_id uuid NOT NULL,
  PRIMARY KEY (hour, user_id)
);
