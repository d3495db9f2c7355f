-- One row per function invocation: HTTP calls and (once dispatched) event deliveries.
-- `event_id` is stable across the retries of one event, so handlers can be idempotent.
CREATE TABLE basalt.function_invocations (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  function_name text NOT NULL,
  trigger text NOT NULL,
  event_id text,
  -- The queue job behind an event invocation; a retry from the admin API re-queues it.
  job_id uuid,
  status text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead')),
  attempt integer NOT NULL DEFAULT 1,
  cold_start boolean NOT NULL DEFAULT false,
  started_at timestamptz,
  finished_at timestamptz,
  duration_ms integer,
  error text,
  logs jsonb NOT NULL DEFAULT '[]'::jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX function_invocations_by_function ON basalt.function_invocations (function_name, created_at DESC);
CREATE INDEX function_invocations_by_event ON basalt.function_invocations (event_id) WHERE event_id IS NOT NULL;
