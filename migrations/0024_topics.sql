-- Topics (pub/sub, docs/events.md). A topic exists as soon as a function subscribes to it or
-- something publishes to it; this table keeps only what an admin set: its rules (who may
-- publish with a user token). Events themselves travel as jobs of the subscribers' queues
-- (the job queue of the triggers), written in the publish's own transaction.
CREATE TABLE basalt.topics (
  name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9._-]{0,127}$'),
  rules jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Publish order of events: events with one key run in this order, one at a time, per
-- subscribed function (the fetch of a subscriber's queue holds back all but the first).
CREATE SEQUENCE basalt.event_order;
