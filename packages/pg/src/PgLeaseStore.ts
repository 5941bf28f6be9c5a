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
import { fencedUpdate } from "./internal/checkpoint.js"
import { refail } from "./internal/errors.js"
import { findOne, NonNegativeBigIntText, Timestamp } from "./internal/schema.js"
import { transaction } from "./internal/transaction.js"

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
  const inTransaction = transaction(sql)
  const interval = (millis: number) => sql`(${millis} * interval '1 millisecond')`
  const columns = sql.literal(leaseColumns)
  const acquire = findOne("acquireLease", {
    Request: Schema.Struct({ subscriptionId: Schema.String, workerId: Schema.String, ttlMillis: Schema.Number }),
    Result: LeaseStatusFromRow,
    execute: ({ subscriptionId, workerId, ttlMillis }) => sql`
      INSERT INTO es_subscriptions (subscription_id, worker_id, fence_token, leased_until)
      VALUES (${subscriptionId}, ${workerId}, 1, now() + ${interval(ttlMillis)})
      ON CONFLICT (subscription_id) DO UPDATE
        SET worker_id = excluded.worker_id, fence_token = es_subscriptions.fence_token + 1,
            leased_until = excluded.leased_until, updated_at = now()
        WHERE es_subscriptions.worker_id IS NULL OR es_subscriptions.leased_until <= now()
      RETURNING ${columns}`
  })
  const status = findOne("leaseStatus", {
    Request: Schema.String,
    Result: LeaseStatusFromRow,
    execute: (subscriptionId) => sql`SELECT ${columns} FROM es_subscriptions WHERE subscription_id = ${subscriptionId}`
  })

  return {
    acquire: (subscriptionId, workerId, ttl) => acquire({ subscriptionId, workerId, ttlMillis: Lease.millis(ttl) }),
    renew: (subscriptionId, fence, ttl) =>
      sql`
        UPDATE es_subscriptions SET leased_until = now() + ${interval(Lease.millis(ttl))}
        WHERE subscription_id = ${subscriptionId} AND worker_id = ${fence.workerId}
          AND fence_token = ${fence.fenceToken.toString()}::int8
        RETURNING 1`.pipe(
        Effect.map((rows) => rows.length > 0),
        refail("renewLease")
      ),
    release: (subscriptionId, fence) =>
      sql`
        UPDATE es_subscriptions SET leased_until = '-infinity'
        WHERE subscription_id = ${subscriptionId} AND worker_id = ${fence.workerId}
          AND fence_token = ${fence.fenceToken.toString()}::int8`.pipe(Effect.asVoid, refail("releaseLease")),
    status,
    commitFenced: (subscriptionId, fence, checkpoint, effect) =>
      inTransaction(
        Effect.flatMap(effect, (a) =>
          fencedUpdate(sql, subscriptionId, checkpoint, fence).pipe(
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
