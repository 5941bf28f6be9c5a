/**
 * Catch-up on PostgreSQL (issue 12): the shared catch-up suite, and the
 * round trips of an at-least-once batch's checkpoint.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Projection from "@mire/core/Projection"
import * as ProjectionRunner from "@mire/core/ProjectionRunner"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import { catchUpSuite, waitUntil } from "@mire/core/conformance"
import * as PgStore from "../src/PgStore.js"
import { migratedLayer } from "./utils.js"
import { traced } from "../../../test/spans.js"

const storeLayer = PgStore.layer.pipe(Layer.provideMerge(migratedLayer({ maxConnections: 20 })))

catchUpSuite("postgres", storeLayer)

describe("catch-up round trips (postgres)", () => {
  layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.effect("an at-least-once batch checkpoints with one fenced UPDATE and no transaction", () =>
      Effect.gen(function* () {
        const category = `rt${crypto.randomUUID().slice(0, 8)}`
        for (let s = 0; s < 3; s++) {
          yield* EventStore.append(`${category}-${s}`, category, ExpectedVersion.NoStream, [
            { eventType: "rt.marked", schemaVersion: 1, data: { s } },
            { eventType: "rt.marked", schemaVersion: 1, data: { s } }
          ])
        }
        const subscriptionId = `rt-${crypto.randomUUID()}`
        let seen = 0
        const projection = Projection.atLeastOnce({
          subscriptionId,
          categories: [category],
          handle: () => Effect.sync(() => void seen++)
        })
        const { spans } = yield* traced(
          Effect.scoped(
            Effect.gen(function* () {
              const runner = yield* ProjectionRunner.run([projection], { workerId: "rt", batchSize: 2, pollInterval: "50 millis" })
              yield* waitUntil(Effect.sync(() => seen >= 6), "every event handled")
              yield* runner.whenCaughtUp(subscriptionId)
            })
          )
        )
        const batches = spans.filter((s) => s.name === "ProjectionRunner.batch" && s.status._tag === "Ended")
        assert.isAtLeast(batches.length, 3)
        const under = (batch: Tracer.Span, span: Tracer.Span): boolean => {
          let p = span.parent
          while (Option.isSome(p)) {
            if (p.value.spanId === batch.spanId) return true
            p = p.value._tag === "Span" ? p.value.parent : Option.none()
          }
          return false
        }
        for (const batch of batches) {
          const inside = spans.filter((s) => under(batch, s)).map((s) => s.name)
          assert.deepStrictEqual(inside, ["sql.execute"], `spans of one at-least-once batch: ${inside.join(", ")}`)
        }
      })
    )
  })
})
