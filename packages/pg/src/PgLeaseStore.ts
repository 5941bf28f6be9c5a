/**
 * The PostgreSQL `LeaseStore`: the lease is the subscription's row in
 * `es_subscriptions` (no advisory locks). Acquisition is one conditional
 * upsert that bumps `fence_token`; a fenced commit ends its transaction with
 * an `UPDATE … WHERE worker_id = $w AND fence_token = $t`, which also orders
 * it against a concurrent takeover through the row lock.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Lease from "@mire/core/Lease"
import * as LeaseStore from "@mire/core/LeaseStore"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { deliveredJson, fencedUpdate } from "./internal/checkpoint.js"
import { refail } from "./internal/errors.js"
import { decodeRows, findOne, NonNegativeBigIntText, Timestamp } from "./internal/schema.js"
import { transaction } from "./internal/transaction.js"
import * as PgSchema from "./PgSchema.js"

/** A lease as `es_subscriptions` holds it. */
const LeaseRow = Schema.Struct({
  subscription_id: Schema.String,
  worker_id: Schema.NullOr(Schema.String),
  fence_token: NonNegativeBigIntText,
  leased_until: Timestamp
})

/** The lease status of a row; a row of the wrong shape fails to decode (a `StoreError`). */
const LeaseStatusFromRow = Schema.transform(
  LeaseRow,
  Schema.Struct({
    subscriptionId: Schema.String,
    workerId: Schema.NullOr(Schema.String),
    fenceToken: Schema.BigIntFromSelf,
    leasedUntil: Schema.DateFromSelf
  }),
  {
    strict: true,
    decode: (row) => ({
      subscriptionId: row.subscription_id,
      workerId: row.worker_id,
      fenceToken: row.fence_token,
      leasedUntil: row.leased_until
    }),
    encode: (status) => ({
      subscription_id: status.subscriptionId,
      worker_id: status.workerId,
      fence_token: status.fenceToken,
      leased_until: status.leasedUntil
    })
  }
)

/** A row locked for a reset: its lease, and the server's time in milliseconds. */
const decodeLockedRows = decodeRows(Schema.Struct({ ...LeaseRow.fields, now_millis: Schema.Number }), "resetCheckpoint")

/** The columns of a {@link LeaseRow} (a released lease's `-infinity` reads as the epoch). */
const leaseColumns = `subscription_id, worker_id, fence_token::text AS fence_token,
  GREATEST(leased_until, 'epoch') AS leased_until`

/**
 * Builds the store.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<LeaseStore.LeaseStore, never, SqlClient.SqlClient> = Effect.gen(function* () {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const names = yield* PgSchema.PgSchema
  const inTransaction = transaction(sql)
  const interval = (millis: number) => sql`(${millis} * interval '1 millisecond')`
  const columns = sql.literal(leaseColumns)
  const acquire = findOne("acquireLease", {
    Request: Schema.Struct({ subscriptionId: Schema.String, workerId: Schema.String, ttlMillis: Schema.Number }),
    Result: LeaseStatusFromRow,
    execute: ({ subscriptionId, workerId, ttlMillis }) => sql`
      INSERT INTO ${names.subscriptions} AS held (subscription_id, worker_id, fence_token, leased_until, checkpointed)
      VALUES (${subscriptionId}, ${workerId}, 1, now() + ${interval(ttlMillis)}, false)
      ON CONFLICT (subscription_id) DO UPDATE
        SET worker_id = excluded.worker_id, fence_token = held.fence_token + 1,
            leased_until = excluded.leased_until, updated_at = now()
        WHERE held.worker_id IS NULL OR held.leased_until <= now()
      RETURNING ${columns}`
  })
  const status = findOne("leaseStatus", {
    Request: Schema.String,
    Result: LeaseStatusFromRow,
    execute: (subscriptionId) => sql`SELECT ${columns} FROM ${names.subscriptions} WHERE subscription_id = ${subscriptionId}`
  })

  return {
    acquire: (subscriptionId, workerId, ttl) => acquire({ subscriptionId, workerId, ttlMillis: Lease.millis(ttl) }),
    renew: (subscriptionId, fence, ttl) =>
      sql`
        UPDATE ${names.subscriptions} SET leased_until = now() + ${interval(Lease.millis(ttl))}
        WHERE subscription_id = ${subscriptionId} AND worker_id = ${fence.workerId}
          AND fence_token = ${fence.fenceToken.toString()}::int8
        RETURNING 1`.pipe(
        Effect.map((rows) => rows.length > 0),
        refail("renewLease")
      ),
    release: (subscriptionId, fence) =>
      sql`
        UPDATE ${names.subscriptions} SET leased_until = '-infinity'
        WHERE subscription_id = ${subscriptionId} AND worker_id = ${fence.workerId}
          AND fence_token = ${fence.fenceToken.toString()}::int8`.pipe(Effect.asVoid, refail("releaseLease")),
    status,
    reset: (subscriptionId, checkpoint, force) =>
      inTransaction(
        Effect.gen(function* () {
          // The row locked, its lease and the server's time: the decision is the same rule as in memory.
          const rows = yield* sql`
            SELECT ${columns}, (extract(epoch FROM now()) * 1000)::float8 AS now_millis
            FROM ${names.subscriptions} WHERE subscription_id = ${subscriptionId} FOR UPDATE`.pipe(refail("resetCheckpoint"))
          const locked = yield* decodeLockedRows(rows)
          const row = locked[0]
          const lease: Lease.LeaseStatus | undefined =
            row === undefined
              ? undefined
              : { subscriptionId: row.subscription_id, workerId: row.worker_id, fenceToken: row.fence_token, leasedUntil: row.leased_until }
          const decision = Lease.decideReset(lease, row?.now_millis ?? 0, force)
          if (decision._tag !== "Reset") return decision
          yield* sql`
            UPDATE ${names.subscriptions}
              SET last_transaction_id = ${checkpoint.cursor.transactionId.toString()}::xid8,
                  last_position = ${checkpoint.cursor.position}, delivered = ${deliveredJson(checkpoint)}::jsonb,
                  fence_token = ${decision.fenceToken.toString()}::int8, leased_until = '-infinity',
                  failure = NULL, failed_at = NULL, checkpointed = true, updated_at = now()
            WHERE subscription_id = ${subscriptionId}`.pipe(refail("resetCheckpoint"))
          return decision
        })
      ),
    commitFenced: (subscriptionId, fence, checkpoint, effect) =>
      inTransaction(
        Effect.flatMap(effect, (a) =>
          fencedUpdate(sql, names, subscriptionId, checkpoint, fence).pipe(
            refail("commitFenced"),
            Effect.flatMap((rows) =>
              rows.length > 0 ? Effect.succeed(a) : Effect.fail(new Lease.LeaseLost({ subscriptionId, ...fence }))
            )
          )
        )
      )
  }
})

/**
 * The PostgreSQL `LeaseStore` layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<LeaseStore.LeaseStore, never, SqlClient.SqlClient> = Layer.effect(LeaseStore.LeaseStore, make)
