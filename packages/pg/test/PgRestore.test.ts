/**
 * After a restore into a new cluster, subscriptions do not go silent (issue
 * 11, item 10). A restore is simulated on the test server by moving the
 * stored transaction ids (or a checkpoint) far above the server's, as a dump
 * restored into a fresh cluster (whose xid counter starts low) would leave them.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import { XidAhead } from "@mire/core/EventStoreError"
import * as Projection from "@mire/core/Projection"
import * as ProjectionRunner from "@mire/core/ProjectionRunner"
import * as Subscription from "@mire/core/Subscription"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as PgStatus from "../src/PgStatus.js"
import * as PgStore from "../src/PgStore.js"
import * as PgSubscriptionStore from "../src/PgSubscriptionStore.js"
import { migratedLayer } from "./utils.js"

const ev = { eventType: "restore.e", schemaVersion: 1, data: {} }
/** Three xid epochs: what the original cluster's ids look like next to a fresh cluster's. */
const shift = 3n * 2n ** 32n

const appendSome = (category: string) =>
  Effect.forEach([1, 2, 3], (i) => EventStore.append(`${category}-${i}`, category, ExpectedVersion.NoStream, [ev, ev]))

/** How a subscription's start ended: "started", or its error. */
const start = (subscriptionId: string, category: string) =>
  Subscription.make({ subscriptionId, categories: [category] }).pipe(
    Effect.as("started" as const),
    Effect.catchAll((error) => Effect.succeed(error))
  )

const storeLayer = () => PgStore.layer.pipe(Layer.provideMerge(migratedLayer()))

describe("restore into a new cluster", () => {
  layer(storeLayer(), { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.scoped("a log ahead of the server's transaction ids fails a subscription's start with XidAhead; status shows it", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* appendSome("rst")
        // Healthy first: the check passes and status reports nothing ahead.
        yield* Subscription.make({ subscriptionId: "rst-before", categories: ["rst"] })
        const healthy = yield* PgSubscriptionStore.xidStatus
        assert.isTrue(Option.isNone(healthy.ahead))
        assert.isTrue(Option.isSome(healthy.logTransactionId))
        assert.isTrue(Option.getOrThrow(healthy.logTransactionId) < healthy.serverTransactionId)

        yield* sql`UPDATE es_events SET transaction_id = (transaction_id::text::numeric + ${shift.toString()}::numeric)::text::xid8`
        const error = yield* start("rst-after", "rst")
        if (error === "started" || error._tag !== "XidAhead") return assert.fail(`not XidAhead: ${String(error)}`)
        assert.strictEqual(error.source, "log")
        assert.isTrue(error.storedTransactionId >= shift)
        assert.isTrue(error.storedTransactionId > error.serverTransactionId)
        assert.include(error.message, "pg_resetwal --epoch=4")
        // A subscription that already had a checkpoint fails too (its checkpoint is behind, the log is not).
        const again = yield* start("rst-before", "rst")
        assert.strictEqual(again === "started" ? again : again._tag, "XidAhead")

        const status = yield* PgSubscriptionStore.xidStatus
        assert.isTrue(Option.isSome(status.ahead))
        assert.strictEqual(Option.getOrThrow(status.ahead).source, "log")
        assert.isTrue(Option.getOrThrow(status.logTransactionId) >= shift)
      }))
  })

  layer(storeLayer(), { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.scoped("a checkpoint ahead of the server's fails that subscription's start; status names it", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* appendSome("cp")
        yield* sql`
          INSERT INTO es_subscriptions (subscription_id, last_transaction_id, last_position)
          VALUES ('cp-restored',
                  (pg_snapshot_xmax(pg_current_snapshot())::text::numeric + ${shift.toString()}::numeric)::text::xid8, 6)`
        const error = yield* start("cp-restored", "cp")
        if (error === "started" || error._tag !== "XidAhead") return assert.fail(`not XidAhead: ${String(error)}`)
        assert.strictEqual(error.source, "checkpoint")
        assert.strictEqual(error.subscriptionId, "cp-restored")
        assert.include(error.message, "cp-restored")
        // Another subscription starts.
        assert.strictEqual(yield* start("cp-other", "cp"), "started")

        const status = yield* PgSubscriptionStore.xidStatus
        assert.deepStrictEqual(
          status.checkpointsAhead.map((c) => c.subscriptionId),
          ["cp-restored"]
        )
        assert.strictEqual(Option.getOrThrow(status.ahead).source, "checkpoint")
        assert.isTrue(Option.isNone(Xid(status)))
      }))

    it.scoped("the checking transaction's own appends are never mistaken for a restore", () =>
      EventStore.transaction(
        Effect.gen(function* () {
          yield* EventStore.append("own-1", "own", ExpectedVersion.NoStream, [ev])
          yield* Subscription.make({ subscriptionId: "own-sub", categories: ["own"] })
        })
      ))
  })
})

describe("restore into a new cluster: status", () => {
  layer(storeLayer(), { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.scoped("ProjectionRunner.status reports the restore per projection (failed, XidAhead) and PgStatus reports it", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* appendSome("prs")
        assert.strictEqual((yield* PgStatus.status).restore, null)
        yield* sql`UPDATE es_events SET transaction_id = (transaction_id::text::numeric + ${shift.toString()}::numeric)::text::xid8`
        const handle = () => Effect.void
        const runner = yield* ProjectionRunner.run(
          [
            Projection.atLeastOnce({ subscriptionId: "prs-a", categories: ["prs"], handle }),
            Projection.atLeastOnce({ subscriptionId: "prs-b", categories: ["prs"], handle })
          ],
          { workerId: "restored-worker", pollInterval: "50 millis" }
        )
        // The call succeeds: each projection reports the restore as its own failure.
        const all = yield* runner.status
        assert.deepStrictEqual(
          all.map((s) => [s.subscriptionId, s.state]),
          [
            ["prs-a", "failed"],
            ["prs-b", "failed"]
          ]
        )
        for (const s of all) {
          const cause = Option.getOrThrow(s.failure).cause
          assert.instanceOf(cause, XidAhead)
          assert.include(String(cause instanceof XidAhead ? cause.message : cause), "pg_resetwal --epoch=4")
        }

        const status = yield* PgStatus.status
        const restore = status.restore ?? assert.fail("PgStatus.status reports no restore")
        assert.isTrue(Option.isSome(Option.fromNullable(restore.logTransactionId)))
        assert.isTrue((restore.logTransactionId ?? 0n) > restore.serverTransactionId)
        assert.include(restore.message, "the event log holds transaction id")
        assert.include(restore.message, "pg_resetwal --epoch=4")
        assert.strictEqual(PgStatus.toJson(status).restore?.serverTransactionId, restore.serverTransactionId.toString())
      }))
  })
})

/** The log's own verdict (the checkpoint aside). */
const Xid = (status: PgSubscriptionStore.XidStatus) =>
  Option.filter(status.ahead, (error) => error.source === "log")
