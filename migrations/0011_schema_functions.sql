-- mire: every mire function finds its own schema's tables, whoever calls it.
-- A plpgsql function resolves the unqualified table names of its body with
-- the caller's search_path, so a function of schema `b` called by a session
-- whose path starts with `a` would write `a`'s tables. Each function now
-- carries the search_path the migration runner set while applying this file
-- (the schema being migrated, alone): `SET search_path FROM CURRENT`.
-- Every function a later migration creates carries the same clause.
-- Cost, measured on PostgreSQL 15 (server-side loops, 2 shared cores): the
-- clause adds about 2 µs per call (an empty plpgsql function: 2.5 µs pinned,
-- 0.8 µs not); a one-event `mire_append_stream` takes about 320 µs either way
-- (8 interleaved trials of 2000 appends: best 319 µs pinned, 315 µs not;
-- medians 353 and 354 µs), so the difference is below the noise.
-- ALTER FUNCTION rewrites one pg_proc row: no table lock, instant on any size
-- of log (nothing per event); sessions replan their next call.
ALTER FUNCTION mire_append(text[], text[], text[], bigint[], bigint[], uuid[], text[], bigint[], text[], integer[], jsonb[], jsonb[])
  SET search_path FROM CURRENT;
ALTER FUNCTION mire_append_stream(text, text, text, bigint, uuid[], text[], integer[], jsonb[], jsonb[])
  SET search_path FROM CURRENT;
ALTER FUNCTION mire_append_all(text[], text[], text[], bigint[], bigint[], uuid[], text[], bigint[], text[], integer[], jsonb[], jsonb[])
  SET search_path FROM CURRENT;
