-- mire: the reads of one stream as functions, so their plans are prepared
-- once per session. A `pg` statement is sent unnamed, so PostgreSQL parses
-- and plans it on every call: for the load of a short stream that planning
-- (the event table's indexes, the stream-row and snapshot lookups) costs
-- more than running the statement. A PL/pgSQL function keeps its plans for
-- the session; after a few calls it runs a generic plan (the stream id a
-- parameter), which reads one stream by `(stream_id, stream_version)` in
-- order, never a scan and a sort of the table.
--
-- Each function returns the columns the client's row decoders check (named
-- as `RecordedEvent`'s fields), plus the stream row as the same statement
-- saw it: `head` (its version) and `streamState` ('deleted', 'archived' or
-- NULL) on every row.
--
-- `mire_load_page`: the fold columns of `p_limit` events from version
-- `p_from`. `mire_read_stream_page`: every column of those events.
-- `mire_load_snapshot_page`: the stream's snapshot (`snapshotAt`,
-- `snapshotVersion`, and `snapshotState` on the first row only) and the
-- fold columns of the events from the snapshot's version (from 1 without
-- one), or one row of NULL event columns when there are none. Its
-- statements run in the calling statement's snapshot (a `STABLE` function),
-- so they see one state of the log, as a single statement would.
--
-- Their plans are generic (`plan_cache_mode`): by the unique index on
-- `(stream_id, stream_version)` whatever the stream. A custom plan, costed
-- for the one stream asked, would be planned again on every call.
--
-- Creating functions takes no table lock and reads no table: instant on a
-- log of any size.
-- A stream row's lifecycle state as the reads report it: 'deleted', 'archived' or NULL. IMMUTABLE
-- and plain SQL, so it is inlined where it is called (and, inlinable, takes no search_path).
CREATE OR REPLACE FUNCTION mire_stream_state(p_deleted_at timestamptz, p_archived_at timestamptz)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN p_deleted_at IS NOT NULL THEN 'deleted' WHEN p_archived_at IS NOT NULL THEN 'archived' END
$$;

CREATE OR REPLACE FUNCTION mire_load_page(p_stream_id text, p_from bigint, p_limit integer)
RETURNS TABLE (
  "streamVersion" float8,
  "globalPosition" text,
  "eventType" text,
  "schemaVersion" integer,
  data jsonb,
  head float8,
  "streamState" text
) LANGUAGE plpgsql STABLE SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
  v_head float8;
  v_state text;
BEGIN
  SELECT st.version::float8, mire_stream_state(st.deleted_at, st.archived_at) INTO v_head, v_state
    FROM es_streams st WHERE st.stream_id = p_stream_id;
  RETURN QUERY
    SELECT e.stream_version::float8, e.global_position::text, e.event_type, e.schema_version, e.data,
      v_head, v_state
    FROM es_events e
    WHERE e.stream_id = p_stream_id AND e.stream_version >= p_from
    ORDER BY e.stream_version
    LIMIT p_limit;
END
$$;

CREATE OR REPLACE FUNCTION mire_read_stream_page(p_stream_id text, p_from bigint, p_limit integer)
RETURNS TABLE (
  "eventId" text,
  category text,
  "streamVersion" float8,
  "globalPosition" text,
  "transactionId" text,
  "eventType" text,
  "schemaVersion" integer,
  data jsonb,
  metadata jsonb,
  "recordedAt" float8,
  head float8,
  "streamState" text
) LANGUAGE plpgsql STABLE SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
  v_head float8;
  v_state text;
BEGIN
  SELECT st.version::float8, mire_stream_state(st.deleted_at, st.archived_at) INTO v_head, v_state
    FROM es_streams st WHERE st.stream_id = p_stream_id;
  RETURN QUERY
    SELECT e.event_id::text, e.category, e.stream_version::float8, e.global_position::text, e.transaction_id::text,
      e.event_type, e.schema_version, e.data, e.metadata,
      round(date_part('epoch', date_trunc('milliseconds', e.recorded_at)) * 1000),
      v_head, v_state
    FROM es_events e
    WHERE e.stream_id = p_stream_id AND e.stream_version >= p_from
    ORDER BY e.stream_version
    LIMIT p_limit;
END
$$;

CREATE OR REPLACE FUNCTION mire_load_snapshot_page(p_stream_id text, p_limit integer)
RETURNS TABLE (
  "streamVersion" float8,
  "globalPosition" text,
  "eventType" text,
  "schemaVersion" integer,
  data jsonb,
  head float8,
  "streamState" text,
  "snapshotAt" float8,
  "snapshotVersion" integer,
  "snapshotState" jsonb
) LANGUAGE plpgsql STABLE SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
  v_head float8;
  v_state text;
  v_at bigint;
  v_version integer;
  v_snapshot jsonb;
  v_first bigint;
BEGIN
  SELECT st.version::float8, mire_stream_state(st.deleted_at, st.archived_at) INTO v_head, v_state
    FROM es_streams st WHERE st.stream_id = p_stream_id;
  SELECT sn.stream_version, sn.snapshot_version, sn.state INTO v_at, v_version, v_snapshot
    FROM es_snapshots sn WHERE sn.stream_id = p_stream_id;
  -- The snapshot's state goes on the first row only (the anchor, when the snapshot is sound).
  SELECT x.stream_version INTO v_first FROM es_events x
    WHERE x.stream_id = p_stream_id AND x.stream_version >= COALESCE(v_at, 1)
    ORDER BY x.stream_version LIMIT 1;
  IF v_first IS NULL THEN
    RETURN QUERY SELECT NULL::float8, NULL::text, NULL::text, NULL::integer, NULL::jsonb,
      v_head, v_state, v_at::float8, v_version, v_snapshot;
    RETURN;
  END IF;
  RETURN QUERY
    SELECT x.stream_version::float8, x.global_position::text, x.event_type, x.schema_version, x.data,
      v_head, v_state, v_at::float8, v_version, CASE WHEN x.stream_version = v_first THEN v_snapshot END
    FROM es_events x
    WHERE x.stream_id = p_stream_id AND x.stream_version >= v_first
    ORDER BY x.stream_version
    LIMIT p_limit;
END
$$;
