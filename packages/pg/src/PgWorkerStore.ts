/**
 * The PostgreSQL `WorkerStore`: a row per live runner in `es_workers`, beaten
 * with the database's clock. A runner's look is one statement: it upserts the
 * runner's heartbeat (and the key of the units it runs), deletes workers
 * silent for `10 × ttl`, and reads the live peers (the workers with the same
 * units key) and the leases of the runner's units from `es_subscriptions`
 * (a read by primary key: no lock on a subscription row).
 *
 * @since 0.2.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Lease from "@mire/core/Lease"
import * as Rebalance from "@mire/core/Rebalance"
import * as WorkerStore from "@mire/core/WorkerStore"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { refail } from "./internal/errors.js"
import { decodeRows, decodeSingle } from "./internal/schema.js"
import * as PgSchema from "./PgSchema.js"

/** A worker as the statements select it (JSON: times as ISO 8601 text). */
const WorkerJson = Schema.Struct({
  workerId: Schema.String,
  startedAt: Schema.Date,
  heartbeatAt: Schema.Date
})

/** A lease as the look selects it (JSON: the fence token as text, a released lease at the epoch). */
const LeaseJson = Schema.Struct({
  subscriptionId: Schema.String,
  workerId: Schema.NullOr(Schema.String),
  fenceToken: Schema.BigInt,
  leasedUntil: Schema.Date
})

/** The one row of a look. */
const LookRow = Schema.Struct({
  now: Schema.Date,
  workers: Schema.Array(WorkerJson),
  leases: Schema.Array(LeaseJson)
})

const decodeLook = decodeSingle(LookRow, "observeWorkers")
const decodeWorkers = decodeRows(WorkerJson, "workers")

/**
 * Builds the store.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make: Effect.Effect<WorkerStore.WorkerStore, never, SqlClient.SqlClient> = Effect.gen(function* () {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const names = yield* PgSchema.PgSchema
  const workers = names.table("es_workers")
  const interval = (millis: number) => sql`(${millis} * interval '1 millisecond')`
  const iso = (column: string) => sql.literal(`to_json(${column}) #>> '{}'`)
  const workerJson = sql.literal(
    `json_build_object('workerId', worker_id, 'startedAt', to_json(started_at) #>> '{}', 'heartbeatAt', to_json(heartbeat_at) #>> '{}')`
  )
  return {
    observe: (workerId, ttl, subscriptionIds) => {
      const ttlMillis = Lease.millis(ttl)
      // Peers only: the workers that run the same units (runners of other projections are not counted).
      const unitsKey = Rebalance.unitsKey(subscriptionIds)
      // The beat's own row comes from its RETURNING (a CTE's writes are not visible to the statement's reads).
      return sql`
        WITH beat AS (
          INSERT INTO ${workers} (worker_id, started_at, heartbeat_at, units_key) VALUES (${workerId}, now(), now(), ${unitsKey})
          ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now(), units_key = EXCLUDED.units_key
          RETURNING worker_id, started_at, heartbeat_at
        ), forgotten AS (
          DELETE FROM ${workers}
          WHERE heartbeat_at < now() - ${interval(WorkerStore.forgetAfter * ttlMillis)} AND worker_id <> ${workerId}
        )
        SELECT ${iso("now()")} AS now,
          (SELECT COALESCE(json_agg(${workerJson} ORDER BY worker_id), '[]') FROM (
             SELECT worker_id, started_at, heartbeat_at FROM ${workers}
             WHERE heartbeat_at > now() - ${interval(ttlMillis)} AND units_key = ${unitsKey} AND worker_id <> ${workerId}
             UNION ALL SELECT worker_id, started_at, heartbeat_at FROM beat) w) AS workers,
          (SELECT COALESCE(json_agg(json_build_object(
             'subscriptionId', subscription_id, 'workerId', worker_id, 'fenceToken', fence_token::text,
             'leasedUntil', to_json(GREATEST(leased_until, 'epoch')) #>> '{}')), '[]')
           FROM ${names.subscriptions} WHERE subscription_id = ANY(${subscriptionIds}::text[])) AS leases`.pipe(
        refail("observeWorkers"),
        Effect.flatMap(decodeLook)
      )
    },
    leave: (workerId) =>
      sql`DELETE FROM ${workers} WHERE worker_id = ${workerId}`.pipe(Effect.asVoid, refail("leaveWorkers")),
    workers: sql`
      SELECT worker_id AS "workerId", ${iso("started_at")} AS "startedAt", ${iso("heartbeat_at")} AS "heartbeatAt"
      FROM ${workers} ORDER BY worker_id`.pipe(refail("workers"), Effect.flatMap(decodeWorkers))
  }
})

/**
 * The PostgreSQL `WorkerStore` layer (part of `PgStore.layer`).
 *
 * @since 0.2.0
 * @category layers
 */
export const layer: Layer.Layer<WorkerStore.WorkerStore, never, SqlClient.SqlClient> = Layer.effect(WorkerStore.WorkerStore, make)
