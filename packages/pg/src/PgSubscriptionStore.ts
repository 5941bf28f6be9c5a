/**
 * The PostgreSQL `SubscriptionStore`: polls `es_events` by the
 * `(transaction_id, global_position)` cursor behind
 * `pg_snapshot_xmin(pg_current_snapshot())`, evaluated in the same statement
 * as the page, and is woken by the store layer's one `PgWakeups` listener.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as Statement from "@effect/sql/Statement"
import type * as Cursor from "@mire/core/Cursor"
import { type StoreError, XidAhead } from "@mire/core/EventStoreError"
import * as Partition from "@mire/core/Partition"
import type * as Subscription from "@mire/core/Subscription"
import * as SubscriptionStore from "@mire/core/SubscriptionStore"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { deliveredJson, fencedUpdate } from "./internal/checkpoint.js"
import { refail } from "./internal/errors.js"
import * as Execute from "./internal/execute.js"
import { decodeEventRows, eventColumns } from "./internal/rows.js"
import * as ShardIndex from "./internal/shardIndex.js"
import { Delivered, decodeNonEmptyRows, decodeRows, decodeSingle, NonNegativeBigIntText, Timestamp } from "./internal/schema.js"
import * as Xid from "./internal/xid.js"
import * as PgSchema from "./PgSchema.js"
import * as PgWakeups from "./PgWakeups.js"

/**
 * The condition a filter's shard puts on events (none: `TRUE`): the shard of
 * the stream among its count, `mire_shard(stream_id, K) = k`. A valid count
 * (1-1024) is written as a literal, so the condition matches the index of
 * that count ({@link shardIndex}) in every plan, generic ones too; an invalid
 * one (which `Subscription.make` refuses first) is bound as a parameter.
 *
 * @since 0.2.0
 * @category shards
 */
export const shardCondition = (
  sql: PgClient.PgClient,
  shard: Partition.Shard | undefined,
  names: PgSchema.Names = PgSchema.defaultNames
): Statement.Fragment => {
  if (shard === undefined) return sql`TRUE`
  const count = Partition.isShard(shard) ? sql.literal(String(shard.count)) : sql`${shard.count}::int`
  return sql`${sql.literal(names.qualify("mire_shard"))}(stream_id, ${count}) = ${shard.index}`
}

/**
 * The expression index the shards of a count poll through: its name and
 * columns (`es_events_shard_<K>_idx` on the shard and the cursor; with
 * `categories`, `es_events_shard_c<K>_idx` on the category first). For a
 * valid count only.
 *
 * @since 0.2.0
 * @category shards
 */
export const shardIndex = (
  count: number,
  categories: boolean,
  names: PgSchema.Names = PgSchema.defaultNames
): { readonly name: string; readonly columns: string } => {
  const shard = `${names.qualify("mire_shard")}(stream_id, ${count})`
  return categories
    ? { name: `es_events_shard_c${count}_idx`, columns: `category, ${shard}, transaction_id, global_position` }
    : { name: `es_events_shard_${count}_idx`, columns: `${shard}, transaction_id, global_position` }
}

/**
 * The statement of `locate` (exported for plan checks), over `names`' tables
 * (default `public`): one row, the cursor as text, or none.
 *
 * @since 0.2.0
 */
export const locateStatement = (
  sql: SqlClient.SqlClient,
  point: SubscriptionStore.Point,
  names: PgSchema.Names = PgSchema.defaultNames
): Statement.Statement<unknown> =>
  point === "head"
    ? sql`
        SELECT transaction_id::text AS txid, global_position::text AS position FROM ${names.events}
        WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
        ORDER BY transaction_id DESC, global_position DESC LIMIT 1`
    : point === "last"
      ? // The cursor index read backwards: the first visible (committed) row.
        sql`
          SELECT transaction_id::text AS txid, global_position::text AS position FROM ${names.events}
          ORDER BY transaction_id DESC, global_position DESC LIMIT 1`
    : "position" in point
      ? sql`
          SELECT transaction_id::text AS txid, global_position::text AS position FROM ${names.events}
          WHERE global_position >= ${point.position} ORDER BY global_position LIMIT 1`
      : // The events recorded from that time on, through the BRIN index on recorded_at (migration 0018):
        // materialised, so that the planner cannot walk the cursor index from the start of the log instead
        // (it would expect an early match, but recorded_at follows the log: every earlier event is read).
        sql`
          WITH recorded AS MATERIALIZED (
            SELECT transaction_id, global_position FROM ${names.events}
            WHERE recorded_at >= ${point.time.toISOString()}::timestamptz)
          SELECT transaction_id::text AS txid, global_position::text AS position FROM recorded
          ORDER BY transaction_id, global_position LIMIT 1`

/**
 * The poll statement (exported for plan checks), over `names`' tables
 * (default `public`).
 *
 * @since 0.1.0
 */
export const pollStatement = (
  sql: PgClient.PgClient,
  filter: Subscription.Filter,
  after: Cursor.Cursor,
  limit: number,
  names: PgSchema.Names = PgSchema.defaultNames
): Statement.Statement<unknown> => {
  const columns = sql.literal(eventColumns)
  const cursor = sql`(transaction_id, global_position) > (${after.transactionId.toString()}::xid8, ${after.position})`
  const guard =
    filter.shard === undefined
      ? sql`transaction_id < pg_snapshot_xmin(pg_current_snapshot())`
      : sql`transaction_id < pg_snapshot_xmin(pg_current_snapshot()) AND ${shardCondition(sql, filter.shard, names)}`
  const categories = filter.categories
  if (categories === undefined) {
    return sql`SELECT ${columns} FROM ${names.events} WHERE ${cursor} AND ${guard}
               ORDER BY transaction_id, global_position LIMIT ${limit}`
  }
  if (categories.length === 1) {
    return sql`SELECT ${columns} FROM ${names.events} WHERE category = ${categories[0]!} AND ${cursor} AND ${guard}
               ORDER BY transaction_id, global_position LIMIT ${limit}`
  }
  // One index range per category, merged in cursor order (a Merge Append, no sort).
  const parts = categories.map(
    (category) =>
      sql`(SELECT ${columns}, transaction_id AS cursor_xid, global_position AS cursor_position
           FROM ${names.events} WHERE category = ${category} AND ${cursor} AND ${guard}
           ORDER BY transaction_id, global_position LIMIT ${limit})`
  )
  return sql`SELECT * FROM (${sql.join(" UNION ALL ", false)(parts)}) page
             ORDER BY cursor_xid, cursor_position LIMIT ${limit}`
}

/** A row of `xidStatus`: the transaction ids, and a checkpoint ahead of the server's, if any. */
const decodeXidStatusRows = decodeNonEmptyRows(
  Schema.Struct({
    ...Xid.XidRow.fields,
    subscription_id: Schema.NullOr(Schema.String),
    txid: Schema.NullOr(NonNegativeBigIntText)
  }),
  "xidStatus"
)

/** The row of `readCheckpoint`: the transaction ids, and the checkpoint (all `null` without one). */
const decodeCheckpointRow = decodeSingle(
  Schema.Struct({
    ...Xid.XidRow.fields,
    txid: Schema.NullOr(NonNegativeBigIntText),
    position: Schema.NullOr(NonNegativeBigIntText),
    delivered: Schema.NullOr(Delivered)
  }),
  "readCheckpoint"
)

/** A stream's version (`null`: none). */
const VersionRow = Schema.Struct({ stream_id: Schema.String, version: Schema.NullOr(Schema.Int) })
const decodeBaselineRows = decodeRows(VersionRow, "baseline")
const decodePrefixRows = decodeRows(VersionRow, "prefixes")

/** A stream version missing from the log (with its stream's first kept version when it was removed by design). */
const decodeMissingRows = decodeRows(
  Schema.transform(
    Schema.Struct({ stream_id: Schema.String, version: Schema.Int, first_retained: Schema.NullOr(Schema.Int) }),
    Schema.Struct({ streamId: Schema.String, version: Schema.Number, firstRetained: Schema.optional(Schema.Number) }),
    {
      strict: true,
      decode: (row) =>
        row.first_retained === null
          ? { streamId: row.stream_id, version: row.version }
          : { streamId: row.stream_id, version: row.version, firstRetained: row.first_retained },
      encode: (missing) => ({
        stream_id: missing.streamId,
        version: missing.version,
        first_retained: missing.firstRetained ?? null
      })
    }
  ),
  "missing"
)

/** A stored checkpoint (`initCheckpoint` found one). */
const decodeStoredCheckpointRows = decodeRows(
  Schema.transform(
    Schema.Struct({ txid: NonNegativeBigIntText, position: NonNegativeBigIntText, delivered: Delivered }),
    Schema.Struct({
      cursor: Schema.Struct({ transactionId: Schema.BigIntFromSelf, position: Schema.BigIntFromSelf }),
      delivered: Schema.typeSchema(Delivered)
    }),
    {
      strict: true,
      decode: (row) => ({ cursor: { transactionId: row.txid, position: row.position }, delivered: row.delivered }),
      encode: (checkpoint) => ({
        txid: checkpoint.cursor.transactionId,
        position: checkpoint.cursor.position,
        delivered: checkpoint.delivered
      })
    }
  ),
  "initCheckpoint"
)

/** A cursor as text columns. */
const decodeCursorRows = decodeRows(
  Schema.transform(
    Schema.Struct({ txid: NonNegativeBigIntText, position: NonNegativeBigIntText }),
    Schema.Struct({ transactionId: Schema.BigIntFromSelf, position: Schema.BigIntFromSelf }),
    {
      strict: true,
      decode: (row) => ({ transactionId: row.txid, position: row.position }),
      encode: (cursor) => ({ txid: cursor.transactionId, position: cursor.position })
    }
  ),
  "inversionBelow"
)

/** Subscription ids. */
const decodeIdRows = decodeRows(Schema.Struct({ subscription_id: Schema.String }), "shardIds")

/** What `report` reads of a subscription's row. */
const decodeReportRows = decodeRows(
  Schema.Struct({
    categories: Schema.NullOr(Schema.Array(Schema.String)),
    failure: Schema.NullOr(Schema.String),
    failed_at: Schema.NullOr(Timestamp)
  }),
  "report"
)

/** The one row of `lag` (an aggregate). */
const decodeLagRow = decodeSingle(
  Schema.Struct({ events: Schema.Number, age: Schema.Number, oldest: Schema.Number }),
  "lag"
)

/**
 * Transaction ids against the server's: `serverTransactionId` is the next
 * one (`pg_snapshot_xmax(pg_current_snapshot())`, which assigns none),
 * `logTransactionId` the log's highest, `checkpointsAhead` every checkpoint
 * at or above the server's, and `ahead` the error a subscription would fail
 * with (the log, or the first checkpoint). For `mire status`.
 *
 * @since 0.1.0
 * @category status
 */
export interface XidStatus {
  readonly serverTransactionId: bigint
  readonly logTransactionId: Option.Option<bigint>
  readonly checkpointsAhead: ReadonlyArray<{ readonly subscriptionId: string; readonly transactionId: bigint }>
  readonly ahead: Option.Option<XidAhead>
}

/**
 * Checks the log and every checkpoint against the server's transaction ids
 * (see {@link XidStatus}); a restore into a new cluster shows here.
 *
 * @since 0.1.0
 * @category status
 */
export const xidStatus: Effect.Effect<XidStatus, StoreError, SqlClient.SqlClient> = Effect.gen(function* () {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const names = yield* PgSchema.PgSchema
  const rows = yield* sql`
    SELECT ${sql.literal(Xid.xidColumns(names))}, s.subscription_id, s.last_transaction_id::text AS txid
    FROM (SELECT 1) one LEFT JOIN ${names.subscriptions} s
      ON s.last_transaction_id >= pg_snapshot_xmax(pg_current_snapshot())
    ORDER BY s.subscription_id`.pipe(refail("xidStatus"), Effect.flatMap(decodeXidStatusRows))
  const first = rows[0]
  const checkpointsAhead = rows.flatMap((row) =>
    row.subscription_id === null || row.txid === null || !Xid.isAhead(row, row.txid)
      ? []
      : [{ subscriptionId: row.subscription_id, transactionId: row.txid }]
  )
  const log = Xid.check(first, "", undefined)
  return {
    serverTransactionId: first.xid_server,
    logTransactionId: Option.fromNullable(first.xid_log),
    checkpointsAhead,
    ahead: Option.isSome(log)
      ? log
      : Option.map(Option.fromNullable(checkpointsAhead[0]), (c) =>
          new XidAhead({
            subscriptionId: c.subscriptionId,
            source: "checkpoint",
            storedTransactionId: c.transactionId,
            serverTransactionId: first.xid_server
          })
        )
  }
})

/**
 * Builds the store.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<
  SubscriptionStore.SubscriptionStore,
  never,
  PgClient.PgClient | PgWakeups.PgWakeups
> = Effect.gen(function* () {
  const client = yield* PgClient.PgClient
  const listener = yield* PgWakeups.PgWakeups
  const names = yield* PgSchema.PgSchema
  const sql = client.withoutTransforms()
  const execute = Execute.make(client, Option.some(client))
  const categoryFilter = (filter: Subscription.Filter) =>
    filter.categories === undefined
      ? shardCondition(sql, filter.shard, names)
      : sql`category = ANY(${filter.categories}) AND ${shardCondition(sql, filter.shard, names)}`
  // A shard count's index is built by its first poll here (once per store and kind), CONCURRENTLY: appends
  // and reads go on meanwhile; one build at a time, across processes too (internal/shardIndex.ts). It only
  // speeds polls up, so a failure to build it is logged, not raised.
  const buildIndex = yield* ShardIndex.make(sql, names)
  const buildShardIndex = yield* Effect.cachedFunction((key: string) =>
    buildIndex(shardIndex(Number(key.slice(1)), key.startsWith("c"), names))
  )
  const ensureShardIndex = (filter: Subscription.Filter) =>
    filter.shard === undefined || !Partition.isShard(filter.shard)
      ? Effect.void
      : buildShardIndex(`${filter.categories === undefined ? "a" : "c"}${filter.shard.count}`)

  return {
    poll: (filter, after, limit) =>
      ensureShardIndex(filter).pipe(
        Effect.zipRight(Execute.statement(execute, pollStatement(sql, filter, after, limit, names))),
        refail("poll"),
        Effect.flatMap(decodeEventRows)
      ),
    baseline: (streamIds, upTo) =>
      sql`
        SELECT s.stream_id,
          (SELECT e.stream_version FROM ${names.events} e
           WHERE e.stream_id = s.stream_id
             AND (e.transaction_id, e.global_position) <= (${upTo.transactionId.toString()}::xid8, ${upTo.position})
           ORDER BY e.stream_version DESC LIMIT 1)::float8 AS version
        FROM unnest(${streamIds}::text[]) AS s(stream_id)`.pipe(
        refail("baseline"),
        Effect.flatMap(decodeBaselineRows),
        Effect.map(
          (rows) =>
            new Map(rows.flatMap((row) => (row.version === null ? [] : [[row.stream_id, row.version] as const])))
        )
      ),
    missing: (wanted) =>
      wanted.length === 0
        ? Effect.succeed([])
        : sql`
            SELECT w.stream_id, w.version::float8 AS version, s.truncated_before::float8 AS first_retained
            FROM unnest(${wanted.map((w) => w.streamId)}::text[], ${wanted.map((w) => w.version)}::int8[]) AS w(stream_id, version)
            LEFT JOIN ${names.streams} s ON s.stream_id = w.stream_id AND w.version < s.truncated_before
            WHERE s.stream_id IS NOT NULL OR NOT EXISTS (
              SELECT 1 FROM ${names.events} e WHERE e.stream_id = w.stream_id AND e.stream_version = w.version)`.pipe(
            refail("missing"),
            Effect.flatMap(decodeMissingRows)
          ),
    inversionBelow: (filter, upTo) =>
      sql`
        WITH after AS (
          SELECT stream_id, min(stream_version) AS first_after FROM ${names.events}
          WHERE (transaction_id, global_position) > (${upTo.transactionId.toString()}::xid8, ${upTo.position})
            AND ${categoryFilter(filter)}
          GROUP BY stream_id)
        SELECT f.transaction_id::text AS txid, f.global_position::text AS position
        FROM after JOIN ${names.events} f ON f.stream_id = after.stream_id AND f.stream_version > after.first_after
        WHERE (f.transaction_id, f.global_position) <= (${upTo.transactionId.toString()}::xid8, ${upTo.position})
        ORDER BY f.transaction_id, f.global_position LIMIT 1`.pipe(
        refail("inversionBelow"),
        Effect.flatMap(decodeCursorRows),
        Effect.map((rows) => Option.fromNullable(rows[0]))
      ),
    prefixes: (filter, after, upTo) =>
      sql`
        WITH s AS (
          SELECT DISTINCT stream_id FROM ${names.events}
          WHERE (transaction_id, global_position) > (${after.transactionId.toString()}::xid8, ${after.position})
            AND (transaction_id, global_position) <= (${upTo.transactionId.toString()}::xid8, ${upTo.position})
            AND ${categoryFilter(filter)})
        SELECT s.stream_id, COALESCE(
          (SELECT min(e.stream_version) - 1 FROM ${names.events} e WHERE e.stream_id = s.stream_id
             AND (e.transaction_id, e.global_position) > (${upTo.transactionId.toString()}::xid8, ${upTo.position})),
          (SELECT max(e.stream_version) FROM ${names.events} e WHERE e.stream_id = s.stream_id))::float8 AS version
        FROM s`.pipe(
        refail("prefixes"),
        Effect.flatMap(decodePrefixRows),
        Effect.map(
          (rows) =>
            new Map(
              rows.flatMap((row) => (row.version === null || row.version <= 0 ? [] : [[row.stream_id, row.version] as const]))
            )
        )
      ),
    // Also where a subscription starts: a log or checkpoint ahead of the server's xids fails it (XidAhead).
    // A cursor moved off 0:0 is a checkpoint even unflagged: code older than 0018 (during a rolling deploy)
    // checkpoints rows that a newer replica's lease acquisition created, without setting the flag.
    readCheckpoint: (subscriptionId) =>
      sql`
        SELECT ${sql.literal(Xid.xidColumns(names))},
               s.last_transaction_id::text AS txid, s.last_position::text AS position, s.delivered
        FROM (SELECT 1) one LEFT JOIN ${names.subscriptions} s ON s.subscription_id = ${subscriptionId}
          AND (s.checkpointed OR s.last_transaction_id <> '0'::xid8 OR s.last_position <> 0)`.pipe(
        refail("readCheckpoint"),
        Effect.flatMap(decodeCheckpointRow),
        Effect.flatMap((row) => {
          const checkpoint =
            row.txid === null || row.position === null ? undefined : { transactionId: row.txid, position: row.position }
          const ahead = Xid.check(row, subscriptionId, checkpoint?.transactionId)
          if (Option.isSome(ahead)) return Effect.fail(ahead.value)
          return Effect.succeed(
            Option.map(Option.fromNullable(checkpoint), (cursor) => ({
              cursor,
              delivered: row.delivered ?? new Map<string, number>()
            }))
          )
        })
      ),
    initCheckpoint: (subscriptionId, checkpoint) =>
      Effect.gen(function* () {
        // One statement writes it unless a checkpoint is there; if one is, a second (a fresh snapshot,
        // so it sees a concurrent first start's commit) reads it.
        const written = yield* sql`
          INSERT INTO ${names.subscriptions} AS s (subscription_id, last_transaction_id, last_position, delivered)
          VALUES (${subscriptionId}, ${checkpoint.cursor.transactionId.toString()}::xid8, ${checkpoint.cursor.position},
                  ${deliveredJson(checkpoint)}::jsonb)
          ON CONFLICT (subscription_id) DO UPDATE
            SET last_transaction_id = excluded.last_transaction_id, last_position = excluded.last_position,
                delivered = excluded.delivered, failure = NULL, failed_at = NULL, checkpointed = true, updated_at = now()
            WHERE NOT s.checkpointed AND s.last_transaction_id = '0'::xid8 AND s.last_position = 0
          RETURNING 1`.pipe(refail("initCheckpoint"))
        if (written.length > 0) return checkpoint
        const [existing] = yield* sql`
          SELECT last_transaction_id::text AS txid, last_position::text AS position, delivered
          FROM ${names.subscriptions} WHERE subscription_id = ${subscriptionId}`.pipe(
          refail("initCheckpoint"),
          Effect.flatMap(decodeStoredCheckpointRows)
        )
        return existing ?? checkpoint
      }),
    locate: (point) =>
      locateStatement(sql, point, names).pipe(
        refail("locate"),
        Effect.flatMap(decodeCursorRows),
        Effect.map((rows) => {
          const found = Option.fromNullable(rows[0])
          return point === "head" ? Option.orElseSome(found, () => ({ transactionId: 0n, position: 0n })) : found
        })
      ),
    writeCheckpoint: (subscriptionId, checkpoint, fence) =>
      Execute.statement(execute, Option.isNone(fence)
        ? sql`
            INSERT INTO ${names.subscriptions} (subscription_id, last_transaction_id, last_position, delivered)
            VALUES (${subscriptionId}, ${checkpoint.cursor.transactionId.toString()}::xid8, ${checkpoint.cursor.position},
                    ${deliveredJson(checkpoint)}::jsonb)
            ON CONFLICT (subscription_id) DO UPDATE
              SET last_transaction_id = excluded.last_transaction_id, last_position = excluded.last_position,
                  delivered = excluded.delivered, failure = NULL, failed_at = NULL, checkpointed = true, updated_at = now()
            RETURNING 1`
        : fencedUpdate(sql, names, subscriptionId, checkpoint, fence.value)
      ).pipe(
        Effect.map((rows) => rows.length > 0),
        refail("writeCheckpoint")
      ),
    describe: (subscriptionId, filter) =>
      sql`UPDATE ${names.subscriptions} SET categories = ${filter.categories === undefined ? null : filter.categories}::text[]
          WHERE subscription_id = ${subscriptionId}
            AND categories IS DISTINCT FROM ${filter.categories === undefined ? null : filter.categories}::text[]`.pipe(
        Effect.asVoid,
        refail("describe")
      ),
    recordFailure: (subscriptionId, failure) =>
      sql`UPDATE ${names.subscriptions} SET failure = ${failure}, failed_at = now() WHERE subscription_id = ${subscriptionId}`.pipe(
        Effect.asVoid,
        refail("recordFailure")
      ),
    shardIds: (subscriptionId) =>
      sql`
        SELECT subscription_id FROM ${names.subscriptions}
        WHERE (subscription_id = ${subscriptionId} OR starts_with(subscription_id, ${`${subscriptionId}#`}))
          AND (checkpointed OR (worker_id IS NOT NULL AND leased_until > now()))`.pipe(
        refail("shardIds"),
        Effect.flatMap(decodeIdRows),
        Effect.map((rows) =>
          rows.flatMap((row) => (Option.isSome(Partition.parse(subscriptionId, row.subscription_id)) ? [row.subscription_id] : []))
        )
      ),
    forget: (subscriptionIds) =>
      subscriptionIds.length === 0
        ? Effect.succeed([])
        : sql`
            WITH gone AS (
              DELETE FROM ${names.subscriptions}
              WHERE subscription_id = ANY(${subscriptionIds}::text[]) AND (worker_id IS NULL OR leased_until <= now())
              RETURNING subscription_id),
            -- Their dead letters go with them (nothing would ever redeliver them).
            letters AS (
              DELETE FROM ${names.table("es_dead_letters")} WHERE subscription_id IN (SELECT subscription_id FROM gone))
            SELECT subscription_id FROM ${names.subscriptions}
            WHERE subscription_id = ANY(${subscriptionIds}::text[])
              AND subscription_id NOT IN (SELECT subscription_id FROM gone)`.pipe(
            refail("forget"),
            Effect.flatMap(decodeIdRows),
            Effect.map((rows) => rows.map((row) => row.subscription_id))
          ),
    report: (subscriptionId) =>
      sql`
        SELECT categories, failure, failed_at FROM ${names.subscriptions} WHERE subscription_id = ${subscriptionId}`.pipe(
        refail("report"),
        Effect.flatMap(decodeReportRows),
        Effect.map((rows) =>
          Option.map(Option.fromNullable(rows[0]), (row) => ({
            categories: Option.fromNullable(row.categories),
            failure:
              row.failure === null || row.failed_at === null
                ? Option.none()
                : Option.some({ message: row.failure, at: row.failed_at })
          }))
        )
      ),
    // The store layer's one listener, fanned out (closing this stream never affects another subscription).
    wakeups: listener.subscribe(names.eventsChannel),
    lag: (filter, after) =>
      sql`
        SELECT count(*)::float8 AS events,
               COALESCE(extract(epoch FROM now() - min(recorded_at)) * 1000, 0)::float8 AS age,
               (SELECT COALESCE(max(extract(epoch FROM now() - xact_start)) * 1000, 0)::float8
                FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()) AS oldest
        FROM ${names.events}
        WHERE (transaction_id, global_position) > (${after.transactionId.toString()}::xid8, ${after.position})
          AND ${categoryFilter(filter)}`.pipe(
        refail("lag"),
        Effect.flatMap(decodeLagRow),
        Effect.map((row) => ({ events: row.events, ageMillis: row.age, oldestTransactionMillis: row.oldest }))
      )
  }
})

/**
 * The PostgreSQL `SubscriptionStore` layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<SubscriptionStore.SubscriptionStore, never, PgClient.PgClient> = Layer.effect(
  SubscriptionStore.SubscriptionStore,
  make
).pipe(Layer.provide(PgWakeups.layer))
