-- mire: coalesced appends. `mire_append_each` runs several independent
-- appends (each to one stream, each with its own expectation) in one
-- statement, so concurrent callers of one process share one round trip, one
-- commit and one WAL flush instead of paying one each.
--
-- Each append is decided on its own, exactly as `mire_append_stream` (0012)
-- decides it: the compare-and-set on the stream row (live, neither archived
-- nor deleted) and the insert of its events. A refused append writes nothing
-- and raises nothing: it has no result row, and the others go on. The
-- appends run in array order (the client sorts them by stream id, so two
-- coalesced statements lock streams in one order); an append that follows
-- another of the same stream in the array sees that one's version, as it
-- would have in its own later statement.
--
-- Result: one row per append that held, `ord` its 1-based index in the
-- arrays. The events of append i are the next `p_counts[i]` elements of the
-- event arrays.
--
-- Creating a function takes no table lock and reads no table: instant on a
-- log of any size. `mire_append_stream` and `mire_append_all` are kept
-- (single appends, `appendMany`, and processes on older code).
CREATE OR REPLACE FUNCTION mire_append_each(
  p_stream_ids text[],
  p_categories text[],
  p_kinds text[],
  p_expected bigint[],
  p_counts integer[],
  p_event_ids uuid[],
  p_event_types text[],
  p_schema_versions integer[],
  p_data jsonb[],
  p_metadata jsonb[]
) RETURNS TABLE (
  ord integer,
  first_version float8,
  last_version float8,
  first_position text,
  last_position text,
  transaction_id text
) LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
  i integer;
  o integer := 0;
  n integer;
  v bigint;
  p_first bigint;
  p_last bigint;
  s_id text;
  s_cat text;
  s_kind text;
BEGIN
  FOR i IN 1 .. coalesce(cardinality(p_stream_ids), 0) LOOP
    n := p_counts[i];
    s_id := p_stream_ids[i];
    s_cat := p_categories[i];
    s_kind := p_kinds[i];
    v := NULL;
    IF s_kind = 'exact' THEN
      UPDATE es_streams SET version = version + n
      WHERE stream_id = s_id AND version = p_expected[i] AND archived_at IS NULL AND deleted_at IS NULL
      RETURNING version INTO v;
    ELSIF s_kind = 'none' THEN
      INSERT INTO es_streams (stream_id, category, version) VALUES (s_id, s_cat, n)
      ON CONFLICT (stream_id) DO NOTHING
      RETURNING version INTO v;
    ELSIF s_kind = 'exists' OR s_kind = 'any' THEN
      UPDATE es_streams SET version = version + n
      WHERE stream_id = s_id AND archived_at IS NULL AND deleted_at IS NULL
      RETURNING version INTO v;
      IF v IS NULL AND s_kind = 'any' THEN
        INSERT INTO es_streams (stream_id, category, version) VALUES (s_id, s_cat, n)
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING version INTO v;
      END IF;
    ELSE
      RAISE EXCEPTION 'mire_append_each: unknown expectation kind %', s_kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v IS NOT NULL THEN
      IF n = 1 THEN
        INSERT INTO es_events (event_id, stream_id, stream_version, category, event_type, schema_version, data, metadata)
        VALUES (p_event_ids[o + 1], s_id, v, s_cat, p_event_types[o + 1], p_schema_versions[o + 1], p_data[o + 1], p_metadata[o + 1])
        RETURNING es_events.global_position INTO p_first;
        p_last := p_first;
      ELSE
        WITH ev AS (
          INSERT INTO es_events (event_id, stream_id, stream_version, category, event_type, schema_version, data, metadata)
          SELECT e.event_id, s_id, v - n + e.ord, s_cat, e.event_type, e.schema_version, e.data, e.metadata
          FROM unnest(p_event_ids[o + 1 : o + n], p_event_types[o + 1 : o + n], p_schema_versions[o + 1 : o + n],
                      p_data[o + 1 : o + n], p_metadata[o + 1 : o + n])
            WITH ORDINALITY AS e(event_id, event_type, schema_version, data, metadata, ord)
          ORDER BY e.ord
          RETURNING es_events.global_position
        )
        SELECT min(ev.global_position), max(ev.global_position) INTO p_first, p_last FROM ev;
      END IF;
      ord := i;
      first_version := v - n + 1;
      last_version := v;
      first_position := p_first::text;
      last_position := p_last::text;
      transaction_id := pg_current_xact_id()::text;
      RETURN NEXT;
    END IF;
    o := o + n;
  END LOOP;
END
$$;
