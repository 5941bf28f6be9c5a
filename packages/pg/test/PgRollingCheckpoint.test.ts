/**
 * A rolling deploy across migration 0018: a newer replica's lease
 * acquisition creates the subscription row unflagged (`checkpointed =
 * false`), then a replica on older code checkpoints it without setting the
 * flag. The newer code reads that checkpoint (a cursor moved off 0:0), and a
 * start option never overwrites it.
 */
import { assert, describe, layer } from "@effect/vitest"
// node:assert's deepStrictEqual: chai's takes `Option.none()` for equal to any `Option.some(…)`.
import { deepStrictEqual } from "@effect/vitest/utils"
import * as SqlClient from "@effect/sql/SqlClient"
import { collectUntil } from "@mire/core/conformance"
import * as Cursor from "@mire/core/Cursor"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as LeaseStore from "@mire/core/LeaseStore"
import * as Subscription from "@mire/core/Subscription"
import * as SubscriptionStore from "@mire/core/SubscriptionStore"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as PgStore from "../src/PgStore.js"
import { migratedLayer } from "./utils.js"

const ev = (mark: string) => ({ eventType: "roll.marked", schemaVersion: 1, data: { mark } })

describe("rolling deploy: checkpoints written by code older than 0018", () => {
  layer(PgStore.layer.pipe(Layer.provideMerge(migratedLayer())), { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.scoped("an unflagged row with a cursor is checkpointed: read back, and never overwritten by a start option", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const store = yield* SubscriptionStore.SubscriptionStore
        const leases = yield* LeaseStore.LeaseStore
        yield* EventStore.append("roll-1", "roll", ExpectedVersion.NoStream, [ev("a"), ev("b")])
        const events = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readStream("roll-1")))
        const first = Cursor.of(events[0]!)
        // The new replica's lease acquisition creates the row: no checkpoint yet.
        assert.isTrue(Option.isSome(yield* leases.acquire("rolling", "new-replica", Duration.minutes(1))))
        assert.isTrue(Option.isNone(yield* store.readCheckpoint("rolling")))
        // The old replica checkpoints after the first event, as 0.1's fenced write does (no `checkpointed`).
        yield* sql`UPDATE es_subscriptions
                   SET last_transaction_id = ${first.transactionId.toString()}::xid8, last_position = ${first.position},
                       delivered = '{}'::jsonb, updated_at = now()
                   WHERE subscription_id = 'rolling'`
        const read = yield* store.readCheckpoint("rolling")
        deepStrictEqual(Option.map(read, (c) => c.cursor), Option.some(first))
        // A new replica starting with `startFrom: "head"` keeps the old replica's progress: b is delivered.
        const sub = yield* Subscription.make({ subscriptionId: "rolling", categories: ["roll"], startFrom: "head" })
        const got = yield* collectUntil(sub, (events) => events.length > 0)
        assert.deepStrictEqual(
          got.map((e) => e.data["mark"]),
          ["b"]
        )
        deepStrictEqual(Option.map(yield* store.readCheckpoint("rolling"), (c) => c.cursor), Option.some(first))
      }))
  })
})
