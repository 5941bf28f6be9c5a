/**
 * The PostgreSQL `DeadLetterStore`: the rows of `es_dead_letters` (migration
 * 0014), one per `(subscription, global position)`. A leader's writes run in
 * `fenced`: one transaction that ends by locking the subscription's row in
 * `es_subscriptions` while its fence token is still the writer's, so a
 * superseded leader's writes roll back and a takeover waits for the commit.
 * Operators' `retry` and `discard` are single statements.
 *
 * `parkedStreams` and `due` never read all of a subscription's dead letters
 * (a stream poisoned for days may have millions): they walk its distinct
 * streams with one probe each of the `(subscription_id, stream_id COLLATE "C",
 * stream_version)` index (a loose index scan, a recursive CTE), and `due`
 * reads each stream's head (its oldest letter) with one more, stopping once it
 * has `limit` letters of due streams.
 *
 * @since 0.2.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as DeadLetters from "@mire/core/DeadLetters"
import * as Lease from "@mire/core/Lease"
import * as Partition from "@mire/core/Partition"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { refail } from "./internal/errors.js"
import { decodeEventRows, eventColumns } from "./internal/rows.js"
import { decodeRows } from "./internal/schema.js"
import { transaction } from "./internal/transaction.js"
import * as PgSchema from "./PgSchema.js"

const decodeLetters = decodeRows(DeadLetters.DeadLetter, "deadLetters")
const decodeStreams = decodeRows(Schema.Struct({ streamId: Schema.String }), "deadLetters")
const decodeCounts = decodeRows(
  Schema.Struct({
    subscriptionId: Schema.String,
    failed: Schema.NonNegativeInt,
    parked: Schema.NonNegativeInt,
    retry: Schema.NonNegativeInt
  }),
  "deadLetters"
)

/** The columns of a dead letter, in the encoded (JSON) shape of `DeadLetters.DeadLetter`. */
const letterColumns = `id::text AS id, subscription_id AS "subscriptionId", global_position::text AS "globalPosition",
  stream_id AS "streamId", stream_version::float8 AS "streamVersion", event_type AS "eventType", error,
  attempts, to_json(first_failed_at) #>> '{}' AS "firstFailedAt", to_json(last_failed_at) #>> '{}' AS "lastFailedAt",
  status`

/**
 * Builds the store.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make: Effect.Effect<DeadLetters.DeadLetterStore, never, SqlClient.SqlClient> = Effect.gen(function* () {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const names = yield* PgSchema.PgSchema
  const table = names.table("es_dead_letters")
  const columns = sql.literal(letterColumns)
  const events = sql.literal(eventColumns)
  const inTransaction = transaction(sql)
  // The subscription, or the shards `<id>#<k>of<K>` of the partitioned projection of that id (`DeadLetters.covers`).
  const ofProjection = (subscriptionId: string) => sql`(subscription_id = ${subscriptionId} OR (
    starts_with(subscription_id, ${`${subscriptionId}#`}) AND EXISTS (
      SELECT 1 FROM regexp_match(substr(subscription_id, length(${subscriptionId}) + 2),
        '^(0|[1-9][0-9]{0,3})of([1-9][0-9]{0,3})$') AS m(part)
      WHERE part[1]::int4 < part[2]::int4 AND part[2]::int4 BETWEEN 2 AND ${Partition.maxPartitions})))`
  const ids = (selection: DeadLetters.Selection) =>
    selection._tag === "All" ? ofProjection(selection.subscriptionId) : sql`id = ANY(${selection.ids.map(String)}::int8[])`
  // The distinct streams of a subscription's dead letters in byte order, numbered: one index probe each.
  const walk = (subscriptionId: string) => sql`
    walk(n, walked) AS (
      (SELECT 1, stream_id FROM ${table} WHERE subscription_id = ${subscriptionId} ORDER BY stream_id COLLATE "C" LIMIT 1)
      UNION ALL
      SELECT w.n + 1, (
        SELECT d.stream_id FROM ${table} d
        WHERE d.subscription_id = ${subscriptionId} AND d.stream_id COLLATE "C" > w.walked
        ORDER BY d.stream_id COLLATE "C" LIMIT 1)
      FROM walk w WHERE w.walked IS NOT NULL)`

  return {
    record: (subscriptionId, letters) =>
      letters.length === 0
        ? Effect.void
        : sql`
            INSERT INTO ${table}
              (subscription_id, global_position, stream_id, stream_version, event_type, error, attempts, status)
            SELECT ${subscriptionId}, l.* FROM unnest(
              ${letters.map((l) => l.globalPosition.toString())}::int8[], ${letters.map((l) => l.streamId)}::text[],
              ${letters.map((l) => l.streamVersion)}::int8[], ${letters.map((l) => l.eventType)}::text[],
              ${letters.map((l) => l.error)}::text[], ${letters.map((l) => l.attempts)}::int4[],
              ${letters.map((l) => l.status)}::text[]) AS l
            ON CONFLICT (subscription_id, global_position) DO NOTHING`.pipe(Effect.asVoid, refail("recordDeadLetters")),
    parkedStreams: (subscriptionId) =>
      sql`WITH RECURSIVE ${walk(subscriptionId)} SELECT walked AS "streamId" FROM walk WHERE walked IS NOT NULL`.pipe(
        refail("parkedStreams"),
        Effect.flatMap(decodeStreams),
        Effect.map((rows) => new Set(rows.map((r) => r.streamId)))
      ),
    due: (subscriptionId, limit) =>
      Effect.gen(function* () {
        // The streams whose oldest dead letter is not `failed` (walked in code-point order, as the in-memory
        // store sorts them, each head one index probe; the walk stops at `limit` due streams), each with its
        // dead letters in version order (at most `limit` each, read from the same index).
        const letters = yield* sql`
          WITH RECURSIVE ${walk(subscriptionId)},
          due AS (
            SELECT w.n, w.walked FROM walk w
            CROSS JOIN LATERAL (
              SELECT h.status FROM ${table} h
              WHERE h.subscription_id = ${subscriptionId} AND h.stream_id COLLATE "C" = w.walked
              ORDER BY h.stream_version LIMIT 1) head
            WHERE w.walked IS NOT NULL AND head.status <> 'failed'
            LIMIT ${limit})
          SELECT ${columns} FROM due
          CROSS JOIN LATERAL (
            SELECT * FROM ${table} l
            WHERE l.subscription_id = ${subscriptionId} AND l.stream_id COLLATE "C" = due.walked
            ORDER BY l.stream_version LIMIT ${limit}) d
          ORDER BY due.n, d.stream_version LIMIT ${limit}`.pipe(refail("dueDeadLetters"), Effect.flatMap(decodeLetters))
        if (letters.length === 0) return []
        const found = yield* sql`
          SELECT ${events} FROM ${names.events}
          WHERE global_position = ANY(${letters.map((l) => l.globalPosition.toString())}::int8[])`.pipe(
          refail("dueDeadLetters"),
          Effect.flatMap(decodeEventRows)
        )
        const byPosition = new Map(found.map((e) => [e.globalPosition, e] as const))
        return letters.map((letter): DeadLetters.Due => ({ letter, event: Option.fromNullable(byPosition.get(letter.globalPosition)) }))
      }),
    resolve: (subscriptionId, id) =>
      sql`DELETE FROM ${table} WHERE id = ${id.toString()}::int8 AND subscription_id = ${subscriptionId}`.pipe(
        Effect.asVoid,
        refail("resolveDeadLetter")
      ),
    failAgain: (subscriptionId, id, failure) =>
      sql`
        UPDATE ${table} SET status = 'failed', error = ${failure.error}, attempts = attempts + ${failure.attempts},
          last_failed_at = now()
        WHERE id = ${id.toString()}::int8 AND subscription_id = ${subscriptionId}`.pipe(Effect.asVoid, refail("failDeadLetter")),
    fenced: (subscriptionId, fence, effect) =>
      inTransaction(
        Effect.flatMap(effect, (a) =>
          sql`
            SELECT 1 FROM ${names.subscriptions}
            WHERE subscription_id = ${subscriptionId} AND worker_id = ${fence.workerId}
              AND fence_token = ${fence.fenceToken.toString()}::int8
            FOR SHARE`.pipe(
            refail("deadLetterFence"),
            Effect.flatMap((rows) =>
              rows.length > 0 ? Effect.succeed(a) : Effect.fail(new Lease.LeaseLost({ subscriptionId, ...fence }))
            )
          )
        )
      ),
    list: (subscriptionId) =>
      Option.match(subscriptionId, {
        onNone: () => sql`SELECT ${columns} FROM ${table} ORDER BY subscription_id COLLATE "C", id`,
        onSome: (id) => sql`SELECT ${columns} FROM ${table} WHERE ${ofProjection(id)} ORDER BY subscription_id COLLATE "C", id`
      }).pipe(refail("listDeadLetters"), Effect.flatMap(decodeLetters)),
    retry: (selection) =>
      sql`UPDATE ${table} SET status = 'retry' WHERE ${ids(selection)} AND status = 'failed' RETURNING 1`.pipe(
        Effect.map((rows) => rows.length),
        refail("retryDeadLetters")
      ),
    discard: (selection) =>
      sql`DELETE FROM ${table} WHERE ${ids(selection)} RETURNING 1`.pipe(
        Effect.map((rows) => rows.length),
        refail("discardDeadLetters")
      ),
    counts: sql`
      SELECT subscription_id AS "subscriptionId",
             (count(*) FILTER (WHERE status = 'failed'))::int4 AS failed,
             (count(*) FILTER (WHERE status = 'parked'))::int4 AS parked,
             (count(*) FILTER (WHERE status = 'retry'))::int4 AS retry
      FROM ${table} GROUP BY subscription_id`.pipe(
      refail("deadLetterCounts"),
      Effect.flatMap(decodeCounts),
      Effect.map((rows) => new Map(rows.map(({ subscriptionId, ...counts }) => [subscriptionId, counts] as const)))
    )
  }
})

/**
 * The PostgreSQL `DeadLetterStore` layer (part of `PgStore.layer`).
 *
 * @since 0.2.0
 * @category layers
 */
export const layer: Layer.Layer<DeadLetters.DeadLetterStore, never, SqlClient.SqlClient> = Layer.effect(
  DeadLetters.DeadLetterStore,
  make
)
