-- mire: the stream lifecycle. A stream's row in es_streams records whether it
-- is archived (read-only, left out of loads and category reads unless asked),
-- deleted (its events and snapshot removed; the row stays as a tombstone with
-- its version, so the id cannot be reused), and the first version it keeps
-- (`truncated_before`: versions below it were removed by design, by a deletion
-- or a truncation, and subscriptions move past them instead of waiting).
--
-- Cost on a populated log: ADD COLUMN with a constant default (or none) only
-- changes the catalog (no rewrite, nothing per row: milliseconds whatever the
-- size). It takes an ACCESS EXCLUSIVE lock on es_streams, which blocks every
-- append, load and category read until this file's transaction commits: the
-- migration runner applies each file in its own transaction, so the lock ends
-- with this file, not with the whole run (it first waits for transactions
-- already using es_streams). CREATE OR REPLACE FUNCTION takes no table lock.
-- Nothing here reads es_events.
ALTER TABLE es_streams
  ADD COLUMN archived_at timestamptz,
  ADD COLUMN deleted_at timestamptz,
  ADD COLUMN truncated_before bigint NOT NULL DEFAULT 1;

-- Category reads leave archived streams out with an anti-join on es_streams'
-- primary key (NOT EXISTS, a cost per event read): no index is needed.

-- The append functions' compare-and-set also requires a live stream (neither
-- archived nor deleted), in the same statement: the happy path reads nothing
-- more. A refused append returns no row (`mire_append_stream`; the client,
-- which already reads the stream's version on that path, reads why) or raises
-- (`mire_append_all`: MR409 a lost expectation, MR423 an archived stream, MR410
-- a deleted one; DETAIL the stream id, HINT its version). `mire_append` (0004,
-- 0009), used only by processes still on older code during a rolling deploy,
-- is left as it is.
CREATE OR REPLACE FUNCTION mire_append_stream(
  p_stream_id text,
  p_category text,
  p_kind text,
  p_expected bigint,
  p_event_ids uuid[],
  p_event_types text[],
  p_schema_versions integer[],
  p_data jsonb[],
  p_metadata jsonb[]
) RETURNS TABLE (
  first_version float8,
  last_version float8,
  first_position text,
  last_position text,
  transaction_id text
) LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
  n bigint := cardinality(p_event_ids);
  v bigint;
BEGIN
  IF p_kind = 'exact' THEN
    UPDATE es_streams SET version = version + n
    WHERE stream_id = p_stream_id AND version = p_expected AND archived_at IS NULL AND deleted_at IS NULL
    RETURNING version INTO v;
  ELSIF p_kind = 'none' THEN
    INSERT INTO es_streams (stream_id, category, version) VALUES (p_stream_id, p_category, n)
    ON CONFLICT (stream_id) DO NOTHING
    RETURNING version INTO v;
  ELSIF p_kind = 'exists' THEN
    UPDATE es_streams SET version = version + n
    WHERE stream_id = p_stream_id AND archived_at IS NULL AND deleted_at IS NULL
    RETURNING version INTO v;
  ELSIF p_kind = 'any' THEN
    UPDATE es_streams SET version = version + n
    WHERE stream_id = p_stream_id AND archived_at IS NULL AND deleted_at IS NULL
    RETURNING version INTO v;
    IF v IS NULL THEN
      -- A concurrent creator (or an archived or deleted stream) makes this return nothing; the client reads why.
      INSERT INTO es_streams (stream_id, category, version) VALUES (p_stream_id, p_category, n)
      ON CONFLICT (stream_id) DO NOTHING
      RETURNING version INTO v;
    END IF;
  ELSE
    RAISE EXCEPTION 'mire_append_stream: unknown expectation kind %', p_kind USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF v IS NULL THEN
    RETURN;
  END IF;
  IF n = 1 THEN
    RETURN QUERY
    INSERT INTO es_events (event_id, stream_id, stream_version, category, event_type, schema_version, data, metadata)
    VALUES (p_event_ids[1], p_stream_id, v, p_category, p_event_types[1], p_schema_versions[1], p_data[1], p_metadata[1])
    RETURNING v::float8, v::float8, es_events.global_position::text, es_events.global_position::text,
              es_events.transaction_id::text;
  ELSE
    RETURN QUERY
    WITH ev AS (
      INSERT INTO es_events (event_id, stream_id, stream_version, category, event_type, schema_version, data, metadata)
      SELECT e.event_id, p_stream_id, v - n + e.ord, p_category, e.event_type, e.schema_version, e.data, e.metadata
      FROM unnest(p_event_ids, p_event_types, p_schema_versions, p_data, p_metadata)
        WITH ORDINALITY AS e(event_id, event_type, schema_version, data, metadata, ord)
      ORDER BY e.ord
      RETURNING es_events.global_position
    )
    SELECT (v - n + 1)::float8, v::float8, min(ev.global_position)::text, max(ev.global_position)::text,
           pg_current_xact_id()::text
    FROM ev;
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION mire_append_all(
  p_stream_ids text[],
  p_categories text[],
  p_kinds text[],
  p_expected bigint[],
  p_counts bigint[],
  p_event_ids uuid[],
  p_event_streams text[],
  p_event_indexes bigint[],
  p_event_types text[],
  p_schema_versions integer[],
  p_data jsonb[],
  p_metadata jsonb[]
) RETURNS TABLE (
  stream_id text,
  first_version float8,
  last_version float8,
  first_position text,
  last_position text,
  transaction_id text
) LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
  r record;
  written text[] := '{}';
  lost text;
  actual bigint;
  archived boolean;
  deleted boolean;
BEGIN
  FOR r IN
    WITH input AS (
      SELECT * FROM unnest(p_stream_ids, p_categories, p_kinds, p_expected, p_counts)
        AS t(stream_id, category, kind, expected, n)
    ),
    upd AS (
      UPDATE es_streams s SET version = s.version + i.n
      FROM input i
      WHERE s.stream_id = i.stream_id
        AND s.archived_at IS NULL AND s.deleted_at IS NULL
        AND (i.kind IN ('any', 'exists') OR (i.kind = 'exact' AND s.version = i.expected))
      RETURNING s.stream_id, s.version
    ),
    ins AS (
      INSERT INTO es_streams (stream_id, category, version)
      SELECT i.stream_id, i.category, i.n FROM input i WHERE i.kind IN ('any', 'none')
      ON CONFLICT (stream_id) DO NOTHING
      RETURNING es_streams.stream_id, es_streams.version
    ),
    cas AS (SELECT u.stream_id, u.version FROM upd u UNION ALL SELECT n.stream_id, n.version FROM ins n),
    ev AS (
      INSERT INTO es_events (event_id, stream_id, stream_version, category, event_type, schema_version, data, metadata)
      SELECT e.event_id, e.stream_id, c.version - i.n + e.idx, i.category, e.event_type, e.schema_version, e.data, e.metadata
      FROM unnest(p_event_ids, p_event_streams, p_event_indexes, p_event_types, p_schema_versions, p_data, p_metadata)
        WITH ORDINALITY AS e(event_id, stream_id, idx, event_type, schema_version, data, metadata, ord)
      JOIN cas c ON c.stream_id = e.stream_id
      JOIN input i ON i.stream_id = e.stream_id
      ORDER BY e.ord
      RETURNING es_events.stream_id, es_events.stream_version, es_events.global_position
    )
    SELECT ev.stream_id AS sid,
           min(ev.stream_version)::float8 AS fv,
           max(ev.stream_version)::float8 AS lv,
           min(ev.global_position)::text AS fp,
           max(ev.global_position)::text AS lp
    FROM ev GROUP BY ev.stream_id
  LOOP
    written := written || r.sid;
    stream_id := r.sid;
    first_version := r.fv;
    last_version := r.lv;
    first_position := r.fp;
    last_position := r.lp;
    transaction_id := pg_current_xact_id()::text;
    RETURN NEXT;
  END LOOP;
  SELECT s INTO lost FROM unnest(p_stream_ids) WITH ORDINALITY AS t(s, o) WHERE s <> ALL (written) ORDER BY o LIMIT 1;
  IF lost IS NOT NULL THEN
    -- The stream's state goes with the error: inside a caller's savepoint, the client cannot
    -- ask for it until the savepoint has rolled back.
    SELECT s.version, s.archived_at IS NOT NULL, s.deleted_at IS NOT NULL INTO actual, archived, deleted
    FROM es_streams s WHERE s.stream_id = lost;
    IF deleted THEN
      RAISE EXCEPTION 'mire: stream % was deleted', lost
        USING ERRCODE = 'MR410', DETAIL = lost, HINT = actual::text;
    ELSIF archived THEN
      RAISE EXCEPTION 'mire: stream % is archived', lost
        USING ERRCODE = 'MR423', DETAIL = lost, HINT = actual::text;
    END IF;
    RAISE EXCEPTION 'mire: the expected version of stream % did not hold', lost
      USING ERRCODE = 'MR409', DETAIL = lost, HINT = coalesce(actual, 0)::text;
  END IF;
END
$$;

-- Deletes a stream one short step per call, each call its own transaction
-- (the client calls it until `done`), so a big stream never holds one long
-- transaction with an xid (which would hold back every subscription's xmin
-- horizon):
-- * under the stream row's lock, a live stream is first marked deleted, its
--   version raised to the tombstone's (its old version plus one): from then
--   on appends are refused (StreamDeleted) and loads see no stream;
-- * each call then removes up to p_batch of its lowest remaining versions and
--   raises truncated_before past them in the same transaction, as a
--   truncation does, so subscriptions move past them and never see a gap;
-- * the call that removes the last ones also removes the snapshot and writes
--   the tombstone event (`p_event_type`, data `{ deletedVersion }`) at the
--   stream's version, its first kept one.
-- A deletion interrupted half-way (a crash) is finished by the next call; a
-- stream already deleted (its tombstone written) is left as it is. Returns
-- the tombstone's version, its category, whether this call wrote the
-- tombstone, and whether the deletion is done; no row when the stream does
-- not exist.
-- Cost per call: an index scan and delete of at most p_batch rows of
-- es_events (by (stream_id, stream_version)), under the stream's row lock.
CREATE FUNCTION mire_delete_stream(
  p_stream_id text,
  p_event_id uuid,
  p_event_type text,
  p_batch integer
) RETURNS TABLE (
  tombstone_version float8,
  category text,
  tombstoned_now boolean,
  done boolean
) LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
  s record;
  tombstone bigint;
  upto bigint;
BEGIN
  SELECT es_streams.version, es_streams.category, es_streams.deleted_at, es_streams.truncated_before INTO s
  FROM es_streams WHERE es_streams.stream_id = p_stream_id FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  IF s.deleted_at IS NULL THEN
    tombstone := s.version + 1;
    UPDATE es_streams SET version = tombstone, deleted_at = now(), archived_at = NULL
    WHERE es_streams.stream_id = p_stream_id;
  ELSE
    tombstone := s.version;
    IF EXISTS (SELECT 1 FROM es_events WHERE es_events.stream_id = p_stream_id AND es_events.stream_version = tombstone) THEN
      RETURN QUERY SELECT tombstone::float8, s.category, false, true;
      RETURN;
    END IF;
  END IF;
  upto := least(tombstone, s.truncated_before + greatest(p_batch, 1));
  DELETE FROM es_events WHERE es_events.stream_id = p_stream_id AND es_events.stream_version < upto;
  UPDATE es_streams SET truncated_before = upto
  WHERE es_streams.stream_id = p_stream_id AND es_streams.truncated_before < upto;
  IF upto < tombstone THEN
    RETURN QUERY SELECT tombstone::float8, s.category, false, false;
    RETURN;
  END IF;
  DELETE FROM es_snapshots WHERE es_snapshots.stream_id = p_stream_id;
  INSERT INTO es_events (event_id, stream_id, stream_version, category, event_type, schema_version, data, metadata)
  VALUES (p_event_id, p_stream_id, tombstone, s.category, p_event_type, 1,
          jsonb_build_object('deletedVersion', tombstone - 1), '{}'::jsonb);
  RETURN QUERY SELECT tombstone::float8, s.category, true, true;
END
$$;
