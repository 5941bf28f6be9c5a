/**
 * The raw baseline of `npm run bench`: the least a commit-safe event log
 * needs, written and read by plain `pg` (no Effect, no Schema), one
 * parameterised statement per logical step. Every function does the same
 * logical work as the mire workload it is compared with, by the shortest SQL.
 *
 * Statements are unnamed (plain `pool.query(text, values)`), as an
 * application using `pg` directly would send them.
 */
import pg from "pg"

/** The baseline schema (issue 12), its snapshot row and a read model for the transactional catch-up. */
export const schema = `
  CREATE TABLE raw_events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id text,
    stream_version bigint,
    event_type text,
    data jsonb,
    metadata jsonb DEFAULT '{}',
    transaction_id xid8 DEFAULT pg_current_xact_id(),
    recorded_at timestamptz DEFAULT now(),
    UNIQUE (stream_id, stream_version)
  );
  CREATE INDEX raw_events_cursor_idx ON raw_events (transaction_id, global_position);
  CREATE TABLE raw_snapshots (stream_id text PRIMARY KEY, version bigint NOT NULL, state jsonb NOT NULL);
  CREATE TABLE raw_checkpoints (
    subscription_id text PRIMARY KEY,
    transaction_id xid8 NOT NULL DEFAULT '0',
    global_position bigint NOT NULL DEFAULT 0,
    fence_token bigint NOT NULL DEFAULT 1
  );
  CREATE TABLE bench_totals (id text PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
`

/**
 * A pool of `size` plain `pg` clients, kept open between workloads. An idle
 * client the server ends (the run's `DROP DATABASE … WITH (FORCE)` while
 * `end()` is still closing them) is dropped, not raised: without a listener,
 * the pool's `error` event would end the process.
 */
export const pool = (url: string, size: number): pg.Pool => {
  const p = new pg.Pool({ connectionString: url, max: size, idleTimeoutMillis: 0 })
  p.on("error", () => undefined)
  return p
}

const insertOne = "INSERT INTO raw_events (stream_id, stream_version, event_type, data) VALUES ($1, $2, $3, $4)"

/** One event, one statement (autocommit); the unique constraint is the version check. */
export const appendOne = async (db: pg.Pool, streamId: string, version: number, eventType: string, data: string) => {
  await db.query(insertOne, [streamId, version, eventType, data])
  return 1
}

/** Many events (of one or more streams) in one `INSERT … SELECT FROM unnest(…)` statement. */
export const appendBatch = async (
  db: pg.Pool,
  rows: { readonly streams: ReadonlyArray<string>; readonly versions: ReadonlyArray<number> },
  eventType: string,
  data: string
) => {
  const n = rows.streams.length
  await db.query(
    `INSERT INTO raw_events (stream_id, stream_version, event_type, data)
     SELECT s, v, $3, d FROM unnest($1::text[], $2::int8[], $4::jsonb[]) AS t(s, v, d)`,
    [rows.streams, rows.versions, eventType, Array.from({ length: n }, () => data)]
  )
  return n
}

/** The bench's event payload as the raw side reads it (trusted, not decoded). */
export interface RawData {
  readonly quantity: number
  readonly unitPrice: number
}

/** A row of `raw_events` as `pg` returns it (int8 and xid8 as strings, jsonb parsed). */
export interface RawRow {
  readonly global_position: string
  readonly stream_id: string
  readonly stream_version: string
  readonly event_type: string
  readonly data: RawData
  readonly metadata: unknown
  readonly transaction_id: string
  readonly recorded_at: Date
}

/** A whole stream in one round trip. */
export const readStream = async (db: pg.Pool, streamId: string): Promise<ReadonlyArray<RawRow>> =>
  (await db.query<RawRow>("SELECT * FROM raw_events WHERE stream_id = $1 ORDER BY stream_version", [streamId])).rows

/** A plain JS fold of a stream's rows (their parsed `data`): the state and the last version. */
export const fold = <S>(rows: ReadonlyArray<RawRow>, initial: S, apply: (state: S, data: RawData) => S) => {
  let state = initial
  for (const row of rows) state = apply(state, row.data)
  const last = rows[rows.length - 1]
  return { state, version: last === undefined ? 0 : Number(last.stream_version) }
}

/** Load + fold: one SELECT, then a plain JS fold of the parsed `data`. */
export const load = async <S>(db: pg.Pool, streamId: string, initial: S, apply: (state: S, data: RawData) => S) =>
  fold(await readStream(db, streamId), initial, apply)

interface SnapshotRow<S> {
  readonly snapshot_version: string
  readonly state: S
  readonly stream_version: string | null
  readonly data: RawData | null
}

/** The snapshot row and the events after it, in one round trip; the tail folded on top of the snapshot's state. */
export const loadSnapshotted = async <S>(
  db: pg.Pool,
  streamId: string,
  apply: (state: S, data: RawData) => S
) => {
  const { rows } = await db.query<SnapshotRow<S>>(
    `SELECT s.version AS snapshot_version, s.state, e.stream_version, e.data
     FROM raw_snapshots s LEFT JOIN raw_events e ON e.stream_id = s.stream_id AND e.stream_version > s.version
     WHERE s.stream_id = $1 ORDER BY e.stream_version`,
    [streamId]
  )
  const first = rows[0]
  if (first === undefined) return undefined
  let state = first.state
  let version = Number(first.snapshot_version)
  for (const row of rows) {
    if (row.data === null || row.stream_version === null) continue
    state = apply(state, row.data)
    version = Number(row.stream_version)
  }
  return { state, version }
}

const pageQuery = `
  SELECT * FROM raw_events
  WHERE (transaction_id, global_position) > ($1::xid8, $2::int8)
    AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
  ORDER BY transaction_id, global_position
  LIMIT $3`

type Queryable = pg.Pool | pg.PoolClient

/** One page after the cursor, behind the xmin guard. */
const page = async (db: Queryable, cursor: readonly [string, string], limit: number) =>
  (await db.query<RawRow>(pageQuery, [cursor[0], cursor[1], limit])).rows

const cursorOf = (row: RawRow): readonly [string, string] => [row.transaction_id, row.global_position]

/** Pages the log from the start until `total` events were read, the log ends, or `deadline` (a `performance.now()`) passes. */
export const catchUp = async (db: pg.Pool, total: number, limit: number, deadline: number) => {
  let cursor: readonly [string, string] = ["0", "0"]
  let seen = 0
  for (;;) {
    const rows = await page(db, cursor, limit)
    const last = rows[rows.length - 1]
    if (last === undefined) return seen
    seen += rows.length
    cursor = cursorOf(last)
    if (seen >= total || performance.now() > deadline) return seen
  }
}

const checkpoint = `
  UPDATE raw_checkpoints SET transaction_id = $2::xid8, global_position = $3
  WHERE subscription_id = $1 AND fence_token = $4`

/** At-least-once catch-up with a no-op handler: a page, then one fenced checkpoint UPDATE (autocommit). */
export const catchUpAtLeastOnce = async (
  db: pg.Pool,
  subscriptionId: string,
  total: number,
  limit: number,
  deadline: number
) => {
  await db.query("INSERT INTO raw_checkpoints (subscription_id) VALUES ($1)", [subscriptionId])
  let cursor: readonly [string, string] = ["0", "0"]
  let seen = 0
  for (;;) {
    const rows = await page(db, cursor, limit)
    const last = rows[rows.length - 1]
    if (last === undefined) return seen
    seen += rows.length
    cursor = cursorOf(last)
    await db.query(checkpoint, [subscriptionId, cursor[0], cursor[1], 1])
    if (seen >= total || performance.now() > deadline) return seen
  }
}

/** Transactional catch-up: per page, one transaction with one UPDATE per event and the fenced checkpoint. */
export const catchUpTransactional = async (
  db: pg.Pool,
  subscriptionId: string,
  total: number,
  limit: number,
  deadline: number
) => {
  await db.query("INSERT INTO raw_checkpoints (subscription_id) VALUES ($1)", [subscriptionId])
  await db.query("INSERT INTO bench_totals (id) VALUES ($1)", [subscriptionId])
  const client = await db.connect()
  try {
    let cursor: readonly [string, string] = ["0", "0"]
    let seen = 0
    for (;;) {
      const rows = await page(client, cursor, limit)
      const last = rows[rows.length - 1]
      if (last === undefined) return seen
      await client.query("BEGIN")
      for (let i = 0; i < rows.length; i++) {
        await client.query("UPDATE bench_totals SET n = n + 1 WHERE id = $1", [subscriptionId])
      }
      cursor = cursorOf(last)
      await client.query(checkpoint, [subscriptionId, cursor[0], cursor[1], 1])
      await client.query("COMMIT")
      seen += rows.length
      if (seen >= total || performance.now() > deadline) return seen
    }
  } finally {
    client.release()
  }
}
