import { assert, describe, it } from "@effect/vitest"
import { catchUpSuite } from "@mire/core/conformance"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Cursor from "../src/Cursor.js"
import * as EventStore from "../src/EventStore.js"
import * as ExpectedVersion from "../src/ExpectedVersion.js"
import * as InMemory from "../src/InMemory.js"
import * as Projection from "../src/Projection.js"
import * as ProjectionRunner from "../src/ProjectionRunner.js"
import type { RecordedEvent } from "../src/RecordedEvent.js"
import * as SubscriptionStore from "../src/SubscriptionStore.js"

catchUpSuite("in-memory", InMemory.layer)

describe("catch-up polls ahead, checkpoints behind", () => {
  for (const delivery of ["at-least-once", "transactional"] as const) {
    it.live(`${delivery}: while a batch is in the handler, the next is polled but the checkpoint covers only what was handled`, () =>
      Effect.gen(function* () {
        const category = delivery === "transactional" ? "aheadtx" : "aheadal"
        const subscriptionId = `sub-${category}`
        const entered = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const seen: Array<RecordedEvent> = []
        const make = delivery === "transactional" ? Projection.transactional : Projection.atLeastOnce
        const projection = make({
          subscriptionId,
          categories: [category],
          handle: ({ recorded }) =>
            Effect.suspend(() => {
              seen.push(recorded)
              // The second batch waits in the handler until released.
              return seen.length === 2 ? Effect.zipRight(Deferred.succeed(entered, undefined), Deferred.await(release)) : Effect.void
            })
        })
        for (let i = 1; i <= 3; i++) {
          yield* EventStore.append(`${category}-${i}`, category, ExpectedVersion.NoStream, [
            { eventType: `${category}.e`, schemaVersion: 1, data: {} }
          ])
        }
        const runner = yield* ProjectionRunner.run([projection], { workerId: "w", batchSize: 1, pollInterval: "20 millis" })
        yield* Deferred.await(entered)
        // Time for the third batch to be polled while the second is in the handler.
        yield* Effect.sleep("100 millis")
        const store = yield* SubscriptionStore.SubscriptionStore
        const during = Option.getOrThrow(yield* store.readCheckpoint(subscriptionId))
        assert.strictEqual(
          Cursor.order(during.cursor, Cursor.of(seen[0]!)),
          0,
          "the checkpoint is the first event's: not the second (in the handler), not the third (polled ahead)"
        )
        yield* Deferred.succeed(release, undefined)
        yield* runner.whenCaughtUp(subscriptionId, "10 seconds")
        assert.deepStrictEqual(
          seen.map((e) => e.streamId),
          [`${category}-1`, `${category}-2`, `${category}-3`]
        )
        const after = Option.getOrThrow(yield* store.readCheckpoint(subscriptionId))
        assert.strictEqual(Cursor.order(after.cursor, Cursor.of(seen[2]!)), 0)
      }).pipe(Effect.scoped, Effect.provide(InMemory.layer)))
  }
})
