-- Realtime channels across instances. Broadcasts travel by pg_notify alone; presence
-- must outlive a notification (a client joining later asks "who is here?"), so it is
-- kept here, tied to the instance that holds the websocket. Each instance beats its
-- heartbeat; when it dies, any other instance sweeps its presences and announces the leaves.
CREATE UNLOGGED TABLE basalt.realtime_instances (
  id uuid PRIMARY KEY,
  heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE UNLOGGED TABLE basalt.realtime_presence (
  ref uuid PRIMARY KEY,
  instance_id uuid NOT NULL REFERENCES basalt.realtime_instances (id) ON DELETE CASCADE,
  channel text NOT NULL,
  key text NOT NULL,
  payload jsonb NOT NULL,
  joined_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX realtime_presence_channel_idx ON basalt.realtime_presence (channel);
CREATE INDEX realtime_presence_instance_idx ON basalt.realtime_presence (instance_id);
