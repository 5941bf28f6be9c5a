/**
 * Every row mire reads from SQL is decoded with a Schema: a row of an
 * impossible shape (written here with plain UPDATEs, as a manual repair or a
 * foreign tool could) is a typed `StoreError`, never a defect and never a
 * silently wrong value.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { StoreError } from "@mire/core/EventStoreError"
import * as LeaseStore from "@mire/core/LeaseStore"
import * as SubscriptionStore from "@mire/core/SubscriptionStore"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as PgStatus from "../src/PgStatus.js"
import * as PgStore from "../src/PgStore.js"
import { migratedLayer } from "./utils.js"

const storeLayer = () => PgStore.layer.pipe(Layer.provideMerge(migratedLayer()))

/** The `StoreError` `effect` fails with; a success, another error or a defect fails the test. */
const storeErrorOf = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<StoreError, never, R> =>
  Effect.map(Effect.exit(effect), (exit) => {
    if (Exit.isSuccess(exit)) return assert.fail(`succeeded with ${String(exit.value)}`)
    const failure = Cause.failureOption(exit.cause)
    if (Option.isNone(failure)) return assert.fail(`not a typed failure: ${Cause.pretty(exit.cause)}`)
    if (!(failure.value instanceof StoreError)) return assert.fail(`not a StoreError: ${String(failure.value)}`)
    return failure.value
  })

/** Asserts a corrupt-row error of `operation` that names `field`. */
const assertCorrupt = (error: StoreError, operation: string, field: string) => {
  assert.strictEqual(error.operation, operation)
  assert.strictEqual(error.kind, "Other")
  assert.include(error.message, "corrupt row")
  assert.include(error.message, field)
}

const checkpoint = (delivered: ReadonlyArray<readonly [string, number]>) => ({
  cursor: { transactionId: 1n, position: 5n },
  delivered: new Map(delivered)
})

describe("rows read from SQL are decoded", () => {
  layer(storeLayer(), { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.effect("a lease row with an impossible lease time or fence token is a StoreError", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const leases = yield* LeaseStore.LeaseStore
        const acquired = yield* leases.acquire("rows-lease", "w1", Duration.seconds(30))
        const lease = Option.getOrThrow(acquired)
        assert.deepStrictEqual([lease.subscriptionId, lease.workerId, lease.fenceToken], ["rows-lease", "w1", 1n])
        assert.deepStrictEqual(yield* leases.status("rows-lease"), acquired)

        yield* sql`UPDATE es_subscriptions SET leased_until = 'infinity' WHERE subscription_id = 'rows-lease'`
        assertCorrupt(yield* storeErrorOf(leases.status("rows-lease")), "leaseStatus", "leased_until")

        yield* sql`UPDATE es_subscriptions SET leased_until = now() - interval '1 second', fence_token = -7
                   WHERE subscription_id = 'rows-lease'`
        assertCorrupt(yield* storeErrorOf(leases.status("rows-lease")), "leaseStatus", "fence_token")
        // The expired lease is taken over, and the row it returns (fence -6) is rejected too.
        assertCorrupt(
          yield* storeErrorOf(leases.acquire("rows-lease", "w2", Duration.seconds(30))),
          "acquireLease",
          "fence_token"
        )
      }))

    it.effect("a checkpoint row with a delivered map or cursor of the wrong shape is a StoreError", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const store = yield* SubscriptionStore.SubscriptionStore
        assert.isTrue(yield* store.writeCheckpoint("rows-sub", checkpoint([["a-1", 2], ["__proto__", 3]]), Option.none()))
        const read = Option.getOrThrow(yield* store.readCheckpoint("rows-sub"))
        assert.deepStrictEqual(read.cursor, { transactionId: 1n, position: 5n })
        // A stream named `__proto__` stays an entry of the map.
        assert.deepStrictEqual([...read.delivered].sort(), [["__proto__", 3], ["a-1", 2]])

        // Before, a value that is not a version was dropped without a word; now the read fails.
        yield* sql`UPDATE es_subscriptions SET delivered = '{"a-1": "two"}' WHERE subscription_id = 'rows-sub'`
        assertCorrupt(yield* storeErrorOf(store.readCheckpoint("rows-sub")), "readCheckpoint", "a-1")
        yield* sql`UPDATE es_subscriptions SET delivered = '[2]' WHERE subscription_id = 'rows-sub'`
        assertCorrupt(yield* storeErrorOf(store.readCheckpoint("rows-sub")), "readCheckpoint", "delivered")

        yield* sql`UPDATE es_subscriptions SET delivered = '{}', last_position = -1 WHERE subscription_id = 'rows-sub'`
        assertCorrupt(yield* storeErrorOf(store.readCheckpoint("rows-sub")), "readCheckpoint", "position")
      }))

    it.effect("a failure time that is not a time is a StoreError of report", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const store = yield* SubscriptionStore.SubscriptionStore
        assert.isTrue(yield* store.writeCheckpoint("rows-report", checkpoint([]), Option.none()))
        yield* store.recordFailure("rows-report", "boom")
        const report = Option.getOrThrow(yield* store.report("rows-report"))
        assert.strictEqual(Option.getOrThrow(report.failure).message, "boom")

        yield* sql`UPDATE es_subscriptions SET failed_at = 'infinity' WHERE subscription_id = 'rows-report'`
        assertCorrupt(yield* storeErrorOf(store.report("rows-report")), "report", "failed_at")
      }))

    it.effect("a status row that is not a time is a StoreError of status", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const store = yield* SubscriptionStore.SubscriptionStore
        // Status reads every row: start from none (the tests above leave corrupt ones).
        yield* sql`DELETE FROM es_subscriptions`
        assert.isTrue(yield* store.writeCheckpoint("rows-status", checkpoint([]), Option.none()))
        const before = yield* PgStatus.status
        assert.isTrue(before.subscriptions.some((s) => s.subscriptionId === "rows-status"))

        yield* sql`UPDATE es_subscriptions SET updated_at = 'infinity' WHERE subscription_id = 'rows-status'`
        assertCorrupt(yield* storeErrorOf(PgStatus.status), "status", "updatedAt")
      }))
  })
})
