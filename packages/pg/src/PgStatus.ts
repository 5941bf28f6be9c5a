/**
 * What the database says about every subscription: lease holder, fence
 * token, checkpoint, categories, lag over those categories and the failure
 * that stopped it, read from `es_subscriptions` (not one process's view); the
 * oldest open transaction holding back the xmin horizon that every
 * subscription waits behind; and whether stored transaction ids are ahead of
 * the server's (a restore into a new cluster).
 *
 * The models are Schemas whose encoded side is the JSON shape of
 * `mire status --json`: bigints as strings, times as ISO 8601 strings,
 * `null` for absent values.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type * as Cursor from "@mire/core/Cursor"
import type { StoreError } from "@mire/core/EventStoreError"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { refail } from "./internal/errors.js"
import { decodeRows } from "./internal/schema.js"
import * as PgSchema from "./PgSchema.js"
import * as PgSubscriptionStore from "./PgSubscriptionStore.js"

/**
 * A subscription cursor: `(transactionId, position)`.
 *
 * @since 0.1.0
 * @category models
 */
export const CursorSchema = Schema.Struct({
  transactionId: Schema.BigInt,
  position: Schema.BigInt
})

/**
 * One subscription's row.
 *
 * - `leaseHolder`: the worker that last acquired the lease (`null`: never
 *   leased); `leaseActive` says whether its lease is still running.
 * - `leasedUntil`: `null` when never leased or released.
 * - `categories`: what it reads (`null`: every category, or a row written
 *   before mire recorded them).
 * - `lag`: committed events of its categories after the checkpoint up to
 *   the commit-safe head.
 * - `failure`: why it stopped (a missing version, a restore, a handler that
 *   kept failing) and when, until its next checkpoint or reset; `null` when
 *   it has not failed.
 *
 * @since 0.1.0
 * @category models
 */
export const SubscriptionStatus = Schema.Struct({
  subscriptionId: Schema.String,
  leaseHolder: Schema.NullOr(Schema.String),
  fenceToken: Schema.BigInt,
  leasedUntil: Schema.NullOr(Schema.Date),
  leaseActive: Schema.Boolean,
  checkpoint: CursorSchema,
  categories: Schema.NullOr(Schema.Array(Schema.String)),
  lag: Schema.BigInt,
  failure: Schema.NullOr(Schema.Struct({ message: Schema.String, at: Schema.Date })),
  /** Its dead letters (`onFailure: "skip"`), of every status; `mire dead-letters list` shows them. */
  deadLetters: Schema.Number,
  updatedAt: Schema.Date
})

/**
 * @since 0.1.0
 * @category models
 */
export type SubscriptionStatus = typeof SubscriptionStatus.Type

/**
 * The open transaction with the oldest transaction id: until it ends, no
 * subscription delivers events committed after it started.
 *
 * @since 0.1.0
 * @category models
 */
export const OpenTransaction = Schema.Struct({
  pid: Schema.Number,
  database: Schema.NullOr(Schema.String),
  applicationName: Schema.String,
  state: Schema.NullOr(Schema.String),
  transactionId: Schema.BigInt,
  ageMillis: Schema.Number,
  /** The first 120 characters of its current or last statement, whitespace collapsed. */
  query: Schema.String
})

/**
 * @since 0.1.0
 * @category models
 */
export type OpenTransaction = typeof OpenTransaction.Type

/**
 * Transaction ids stored ahead of the server's (a dump/restore or a
 * logical-replication cut-over into a cluster with a younger xid counter):
 * the log's highest, and every checkpoint at or above the server's next
 * transaction id. Until it is fixed, new events sort behind every checkpoint
 * and no subscription starts. `message` says what happened and what to do.
 *
 * @since 0.1.0
 * @category models
 */
export const Restore = Schema.Struct({
  serverTransactionId: Schema.BigInt,
  logTransactionId: Schema.NullOr(Schema.BigInt),
  checkpointsAhead: Schema.Array(Schema.Struct({ subscriptionId: Schema.String, transactionId: Schema.BigInt })),
  message: Schema.String
})

/**
 * @since 0.1.0
 * @category models
 */
export type Restore = typeof Restore.Type

/**
 * A projection runner registered in `es_workers`: when it started, when it
 * last looked (its heartbeat, on the database's clock; a runner looks once
 * per lease recheck interval, and the others count it live while its
 * heartbeat is within their lease ttl), and the units (subscriptions or
 * shards) whose live lease it holds.
 *
 * @since 0.2.0
 * @category models
 */
export const WorkerStatus = Schema.Struct({
  workerId: Schema.String,
  startedAt: Schema.Date,
  heartbeatAt: Schema.Date,
  /** Milliseconds since its last heartbeat. */
  silentMillis: Schema.Number,
  leads: Schema.Array(Schema.String)
})

/**
 * @since 0.2.0
 * @category models
 */
export type WorkerStatus = typeof WorkerStatus.Type

/**
 * The whole picture. `head` is the commit-safe head of the log: the cursor
 * of the last event a subscription could deliver now.
 *
 * @since 0.1.0
 * @category models
 */
export const Status = Schema.Struct({
  head: CursorSchema,
  subscriptions: Schema.Array(SubscriptionStatus),
  /** Every registered runner with the units it leads (see {@link WorkerStatus}). */
  workers: Schema.Array(WorkerStatus),
  oldestTransaction: Schema.NullOr(OpenTransaction),
  /** `null` unless stored transaction ids are ahead of the server's (see {@link Restore}). */
  restore: Schema.NullOr(Restore)
})

/**
 * @since 0.1.0
 * @category models
 */
export type Status = typeof Status.Type

// The rows are selected in the models' encoded (JSON) shape, so the models decode them.
const decodeHead = decodeRows(CursorSchema, "head")
const decodeSubscriptions = decodeRows(SubscriptionStatus, "status")
const decodeTransactions = decodeRows(OpenTransaction, "status")

/**
 * The commit-safe head: the greatest cursor of an event older than the xmin
 * horizon ({@link Cursor.start} for an empty log). A subscription opened here
 * delivers exactly the events committed after it.
 *
 * @since 0.1.0
 * @category queries
 */
export const head: Effect.Effect<Cursor.Cursor, StoreError, SqlClient.SqlClient> = Effect.gen(function* () {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const names = yield* PgSchema.PgSchema
  const rows = yield* sql`
    SELECT transaction_id::text AS "transactionId", global_position::text AS position FROM ${names.events}
    WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY transaction_id DESC, global_position DESC LIMIT 1`.pipe(refail("head"))
  const [cursor] = yield* decodeHead(rows)
  return cursor ?? { transactionId: 0n, position: 0n }
})

/**
 * The oldest open transaction that has a transaction id (any database of
 * the server: the horizon is server-wide), or `null`.
 *
 * @since 0.1.0
 * @category queries
 */
export const oldestTransaction: Effect.Effect<OpenTransaction | null, StoreError, SqlClient.SqlClient> = Effect.gen(
  function* () {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const rows = yield* sql`
      SELECT pid, datname AS database, application_name AS "applicationName", state,
             backend_xid::text AS "transactionId",
             COALESCE(extract(epoch FROM clock_timestamp() - xact_start) * 1000, 0)::float8 AS "ageMillis",
             left(regexp_replace(COALESCE(query, ''), '\\s+', ' ', 'g'), 120) AS query
      FROM pg_stat_activity
      WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
      ORDER BY age(backend_xid) DESC LIMIT 1`.pipe(refail("status"))
    const [oldest] = yield* decodeTransactions(rows)
    return oldest ?? null
  }
)

/**
 * Every subscription row, by id, with its lag up to `upTo` (the head).
 *
 * @since 0.1.0
 * @category queries
 */
export const subscriptions = (
  upTo: Cursor.Cursor
): Effect.Effect<ReadonlyArray<SubscriptionStatus>, StoreError, SqlClient.SqlClient> =>
  Effect.gen(function* () {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const names = yield* PgSchema.PgSchema
    const iso = (column: string) => sql.literal(`to_json(${column}) #>> '{}'`)
    const rows = yield* sql`
      SELECT s.subscription_id AS "subscriptionId", s.worker_id AS "leaseHolder",
             s.fence_token::text AS "fenceToken",
             CASE WHEN s.leased_until = '-infinity' THEN NULL ELSE ${iso("s.leased_until")} END AS "leasedUntil",
             s.leased_until > now() AS "leaseActive",
             json_build_object('transactionId', s.last_transaction_id::text, 'position', s.last_position::text)
               AS checkpoint,
             s.categories,
             (CASE WHEN s.categories IS NULL THEN
               (SELECT count(*) FROM ${names.events} e
                WHERE (e.transaction_id, e.global_position) > (s.last_transaction_id, s.last_position)
                  AND (e.transaction_id, e.global_position) <= (${upTo.transactionId.toString()}::xid8, ${upTo.position}))
             ELSE
               -- One range of the (category, transaction_id, global_position) index per category.
               (SELECT COALESCE(sum(n), 0) FROM unnest(s.categories) AS c(category) CROSS JOIN LATERAL (
                  SELECT count(*) AS n FROM ${names.events} e
                  WHERE e.category = c.category
                    AND (e.transaction_id, e.global_position) > (s.last_transaction_id, s.last_position)
                    AND (e.transaction_id, e.global_position) <= (${upTo.transactionId.toString()}::xid8, ${upTo.position})) per)
             END)::text AS lag,
             CASE WHEN s.failure IS NULL OR s.failed_at IS NULL THEN NULL
               ELSE json_build_object('message', s.failure, 'at', ${iso("s.failed_at")}) END AS failure,
             (SELECT count(*) FROM ${names.table("es_dead_letters")} d
              WHERE d.subscription_id = s.subscription_id)::float8 AS "deadLetters",
             ${iso("s.updated_at")} AS "updatedAt"
      FROM ${names.subscriptions} s
      ORDER BY s.subscription_id`.pipe(refail("status"))
    return yield* decodeSubscriptions(rows)
  })

const decodeWorkers = decodeRows(WorkerStatus, "status")

/**
 * Every runner registered in `es_workers`, by id, with the units whose live
 * lease it holds.
 *
 * @since 0.2.0
 * @category queries
 */
export const workers: Effect.Effect<ReadonlyArray<WorkerStatus>, StoreError, SqlClient.SqlClient> = Effect.gen(function* () {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const names = yield* PgSchema.PgSchema
  const rows = yield* sql`
    SELECT w.worker_id AS "workerId", to_json(w.started_at) #>> '{}' AS "startedAt",
           to_json(w.heartbeat_at) #>> '{}' AS "heartbeatAt",
           GREATEST(extract(epoch FROM now() - w.heartbeat_at) * 1000, 0)::float8 AS "silentMillis",
           ARRAY(SELECT s.subscription_id FROM ${names.subscriptions} s
                 WHERE s.worker_id = w.worker_id AND s.leased_until > now() ORDER BY s.subscription_id) AS leads
    FROM ${names.table("es_workers")} w
    ORDER BY w.worker_id`.pipe(refail("status"))
  return yield* decodeWorkers(rows)
})

/**
 * The restore condition of an {@link PgSubscriptionStore.XidStatus}, or `null`.
 *
 * @since 0.1.0
 * @category conversions
 */
export const restoreOf = (xids: PgSubscriptionStore.XidStatus): Restore | null =>
  Option.match(xids.ahead, {
    onNone: () => null,
    onSome: (ahead) => ({
      serverTransactionId: xids.serverTransactionId,
      logTransactionId: Option.getOrNull(xids.logTransactionId),
      checkpointsAhead: xids.checkpointsAhead,
      message: ahead.message
    })
  })

/**
 * The head, every subscription, the oldest open transaction and whether
 * stored transaction ids are ahead of the server's (a restore).
 *
 * @example
 * ```ts
 * import { PgStatus } from "@mire/pg"
 * import { Effect } from "effect"
 *
 * const program = Effect.gen(function* () {
 *   const { subscriptions } = yield* PgStatus.status
 *   yield* Effect.log(`${subscriptions.length} subscriptions`)
 * })
 * ```
 * @since 0.1.0
 * @category queries
 */
export const status: Effect.Effect<Status, StoreError, SqlClient.SqlClient> = Effect.gen(function* () {
  const at = yield* head
  // A database without es_workers yet (0017 not applied, a rolling upgrade): its runners look alone, none registered.
  const registered = workers.pipe(Effect.catchIf((e) => e.kind === "NotMigrated", () => Effect.succeed<ReadonlyArray<WorkerStatus>>([])))
  const [subs, runners, oldest, xids] = yield* Effect.all([subscriptions(at), registered, oldestTransaction, PgSubscriptionStore.xidStatus])
  return { head: at, subscriptions: subs, workers: runners, oldestTransaction: oldest, restore: restoreOf(xids) }
}).pipe(Effect.withSpan("PgStatus.status"))

/**
 * The JSON form of a {@link Status} (the shape of `mire status --json`).
 *
 * @since 0.1.0
 * @category conversions
 */
export const toJson: (status: Status) => typeof Status.Encoded = Schema.encodeSync(Status)
