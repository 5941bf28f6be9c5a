/**
 * The PostgreSQL `SubscriptionStore`: polls `es_events` by the
 * `(transaction_id, global_position)` cursor behind
 * `pg_snapshot_xmin(pg_current_snapshot())`, evaluated in the same statement
 * as the page, and listens on `mire_events` for wake-ups.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import type * as Statement from "@effect/sql/Statement"
import type * as Cursor from "@mire/core/Cursor"
import * as Subscription from "@mire/core/Subscription"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { deliveredJson, fencedUpdate } from "./internal/checkpoint.js"
import { refail, toStoreError } from "./internal/errors.js"
import { decodeEventRows, eventColumns } from "./internal/rows.js"
import { channel } from "./PgEventStore.js"

/**
 * The poll statement (exported for plan checks).
 *
 * @since 0.1.0
 */
export const pollStatement = (
  sql: PgClient.PgClient,
  filter: Subscription.Filter,
  after: Cursor.Cursor,
  limit: number
): Statement.Statement<unknown> => {
  const columns = sql.literal(eventColumns)
  const cursor = sql`(transaction_id, global_position) > (${after.transactionId.toString()}::xid8, ${after.position})`
  const guard = sql`transaction_id < pg_snapshot_xmin(pg_current_snapshot())`
  const categories = filter.categories
  if (categories === undefined) {
    return sql`SELECT ${columns} FROM es_events WHERE ${cursor} AND ${guard}
               ORDER BY transaction_id, global_position LIMIT ${limit}`
  }
  if (categories.length === 1) {
    return sql`SELECT ${columns} FROM es_events WHERE category = ${categories[0]!} AND ${cursor} AND ${guard}
               ORDER BY transaction_id, global_position LIMIT ${limit}`
  }
  // One index range per category, merged in cursor order (a Merge Append, no sort).
  const parts = categories.map(
    (category) =>
      sql`(SELECT ${columns}, transaction_id AS cursor_xid, global_position AS cursor_position
           FROM es_events WHERE category = ${category} AND ${cursor} AND ${guard}
           ORDER BY transaction_id, global_position LIMIT ${limit})`
  )
  return sql`SELECT * FROM (${sql.join(" UNION ALL ", false)(parts)}) page
             ORDER BY cursor_xid, cursor_position LIMIT ${limit}`
}

/**
 * Builds the store.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Subscription.SubscriptionStore, never, PgClient.PgClient> = Effect.gen(function* () {
  const client = yield* PgClient.PgClient
  const sql = client.withoutTransforms()
  const categoryFilter = (filter: Subscription.Filter) =>
    filter.categories === undefined ? sql`TRUE` : sql`category = ANY(${filter.categories})`

  return {
    poll: (filter, after, limit) =>
      pollStatement(sql, filter, after, limit).pipe(refail("poll"), Effect.flatMap(decodeEventRows)),
    baseline: (streamIds, upTo) =>
      sql<{ stream_id: string; version: number | null }>`
        SELECT s.stream_id,
          (SELECT e.stream_version FROM es_events e
           WHERE e.stream_id = s.stream_id
             AND (e.transaction_id, e.global_position) <= (${upTo.transactionId.toString()}::xid8, ${upTo.position})
           ORDER BY e.stream_version DESC LIMIT 1)::float8 AS version
        FROM unnest(${streamIds}::text[]) AS s(stream_id)`.pipe(
        Effect.map(
          (rows) =>
            new Map(rows.flatMap((row) => (row.version === null ? [] : [[row.stream_id, row.version] as const])))
        ),
        refail("baseline")
      ),
    readCheckpoint: (subscriptionId) =>
      sql<{ txid: string; position: string; delivered: Record<string, number> }>`
        SELECT last_transaction_id::text AS txid, last_position::text AS position, delivered
        FROM es_subscriptions WHERE subscription_id = ${subscriptionId}`.pipe(
        Effect.map((rows) =>
          Option.map(Option.fromNullable(rows[0]), (row) => ({
            cursor: { transactionId: BigInt(row.txid), position: BigInt(row.position) },
            delivered: new Map(Object.entries(row.delivered ?? {}).filter(([, v]) => typeof v === "number"))
          }))
        ),
        refail("readCheckpoint")
      ),
    writeCheckpoint: (subscriptionId, checkpoint, fence) =>
      (Option.isNone(fence)
        ? sql`
            INSERT INTO es_subscriptions (subscription_id, last_transaction_id, last_position, delivered)
            VALUES (${subscriptionId}, ${checkpoint.cursor.transactionId.toString()}::xid8, ${checkpoint.cursor.position},
                    ${deliveredJson(checkpoint)}::jsonb)
            ON CONFLICT (subscription_id) DO UPDATE
              SET last_transaction_id = excluded.last_transaction_id, last_position = excluded.last_position,
                  delivered = excluded.delivered, updated_at = now()
            RETURNING 1`
        : fencedUpdate(sql, subscriptionId, checkpoint, fence.value)
      ).pipe(
        Effect.map((rows) => rows.length > 0),
        refail("writeCheckpoint")
      ),
    wakeups: client.listen(channel).pipe(Stream.mapError(toStoreError("listen"))),
    lag: (filter, after) =>
      sql<{ events: number; age: number; oldest: number }>`
        SELECT count(*)::float8 AS events,
               COALESCE(extract(epoch FROM now() - min(recorded_at)) * 1000, 0)::float8 AS age,
               (SELECT COALESCE(max(extract(epoch FROM now() - xact_start)) * 1000, 0)::float8
                FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()) AS oldest
        FROM es_events
        WHERE (transaction_id, global_position) > (${after.transactionId.toString()}::xid8, ${after.position})
          AND ${categoryFilter(filter)}`.pipe(
        Effect.map((rows) => ({
          events: rows[0]?.events ?? 0,
          ageMillis: rows[0]?.age ?? 0,
          oldestTransactionMillis: rows[0]?.oldest ?? 0
        })),
        refail("lag")
      )
  }
})

/**
 * The PostgreSQL `SubscriptionStore` layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Subscription.SubscriptionStoreTag, never, PgClient.PgClient> = Layer.effect(
  Subscription.SubscriptionStoreTag,
  make
)
