-- mire: the append no longer notifies inside its own transaction.
-- A transaction that has sent NOTIFY takes a database-wide lock at commit and
-- holds it through its WAL flush, so every notifying commit was serialised
-- and concurrent appends lost group commit. The store now notifies after the
-- commit instead: one coalescing notifier per store layer sends
-- `pg_notify('mire_events', category)` for the categories written since its
-- last notification (and an append inside a transaction notifies after that
-- transaction commits). Same signature and result as 0004; replacing a
-- function takes no table lock and is instant on any size of log.
CREATE OR REPLACE FUNCTION mire_append(
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
BEGIN
  RETURN QUERY
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
    RETURNING es_events.stream_id, es_events.stream_version, es_events.global_position, es_events.transaction_id
  )
  SELECT ev.stream_id,
         min(ev.stream_version)::float8,
         max(ev.stream_version)::float8,
         min(ev.global_position)::text,
         max(ev.global_position)::text,
         max(ev.transaction_id::text)
  FROM ev GROUP BY ev.stream_id;
END
$$;
