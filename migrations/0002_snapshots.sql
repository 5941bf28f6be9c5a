-- mire: snapshots, kept out of the event log so that subscriptions and
-- projections never see them. One row per stream: the newest snapshot.
CREATE TABLE es_snapshots (
  stream_id text PRIMARY KEY,
  stream_version bigint NOT NULL CHECK (stream_version >= 1),
  snapshot_version integer NOT NULL,
  state jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
