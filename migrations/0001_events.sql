-- mire: the event log.
-- es_streams holds one row per stream: the compare-and-set target of every
-- append and the row that loadForUpdate locks.
CREATE TABLE es_streams (
  stream_id text PRIMARY KEY,
  category text NOT NULL,
  version bigint NOT NULL CHECK (version >= 0)
);

-- es_events is append-only. global_position is unique and increasing in
-- insertion order (gaps after rollbacks); transaction_id is the writer's xid,
-- and (transaction_id, global_position) is the commit-safe cursor that
-- subscriptions follow behind the xmin horizon.
CREATE TABLE es_events (
  global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  event_id uuid NOT NULL,
  stream_id text NOT NULL,
  stream_version bigint NOT NULL CHECK (stream_version >= 1),
  category text NOT NULL,
  event_type text NOT NULL,
  schema_version integer NOT NULL DEFAULT 1 CHECK (schema_version >= 1),
  data jsonb NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
  recorded_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT es_events_stream_version_key UNIQUE (stream_id, stream_version),
  CONSTRAINT es_events_event_id_key UNIQUE (event_id)
);

-- Reading a category by position.
CREATE INDEX es_events_category_position_idx ON es_events (category, global_position);
-- The subscription cursor, over the whole log and per category.
CREATE INDEX es_events_cursor_idx ON es_events (transaction_id, global_position);
CREATE INDEX es_events_category_cursor_idx ON es_events (category, transaction_id, global_position);
