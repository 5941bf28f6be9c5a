-- mire: dead letters of projections that run with onFailure "skip".
-- One row per (subscription, event) the projection set aside: the event that
-- kept failing (status 'failed', or 'retry' once an operator asked for a
-- redelivery), and the later events of the same stream parked behind it
-- (status 'parked') so the stream is never handled out of order. The event
-- itself stays in es_events (no copy of its data here): a redelivery reads it
-- from the log by global_position.
-- A new, empty table and its indexes: instant on a populated log (no rewrite,
-- no scan of es_events), and it locks nothing but itself.
CREATE TABLE es_dead_letters (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  subscription_id text NOT NULL,
  global_position bigint NOT NULL,
  stream_id text NOT NULL,
  stream_version bigint NOT NULL CHECK (stream_version >= 1),
  event_type text NOT NULL,
  error text NOT NULL,
  attempts integer NOT NULL CHECK (attempts >= 0),
  first_failed_at timestamptz NOT NULL DEFAULT now(),
  last_failed_at timestamptz NOT NULL DEFAULT now(),
  status text NOT NULL CHECK (status IN ('failed', 'parked', 'retry')),
  -- Recording is idempotent: a redelivered batch finds its rows already there.
  CONSTRAINT es_dead_letters_event_key UNIQUE (subscription_id, global_position)
);

-- A subscription's parked streams, and each stream's dead letters in version order. Byte order ("C")
-- for the stream ids, the order every store lists them in: the leader walks the distinct streams of a
-- subscription with one index probe each (a loose index scan) and reads a stream's head (its oldest
-- dead letter) with one more, so neither `due` nor `parkedStreams` reads every dead letter.
CREATE INDEX es_dead_letters_stream_idx ON es_dead_letters (subscription_id, stream_id COLLATE "C", stream_version);

-- A stream's dead letters of every subscription, lowest version first: truncation and retention never
-- cut a stream past its lowest dead-lettered version (one probe per stream they look at).
CREATE INDEX es_dead_letters_event_stream_idx ON es_dead_letters (stream_id, stream_version);
