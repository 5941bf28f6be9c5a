/**
 * Catch-up shape, run against every store: the default page is
 * 1000 events for a subscription and for the runner, and the at-least-once
 * runner's batch loop keeps per-event retries and order.
 *
 * @since 0.1.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as EventStore from "../EventStore.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import * as Projection from "../Projection.js"
import * as ProjectionRunner from "../ProjectionRunner.js"
import type { NewEvent } from "../RecordedEvent.js"
import * as Subscription from "../Subscription.js"
import type * as LeaseStore from "../LeaseStore.js"
import type * as SubscriptionStore from "../SubscriptionStore.js"
import { unique } from "./fixtures.js"
import { untilCommitSafe, waitUntil } from "./scopes.js"

type Env = EventStore.EventStore | SubscriptionStore.SubscriptionStore | LeaseStore.LeaseStore

const ev = (i: number): NewEvent => ({ eventType: "cu.marked", schemaVersion: 1, data: { i } })

/** Appends `streams` streams of `perStream` events in `category`, one append per stream. */
const seed = (category: string, streams: number, perStream: number) =>
  Effect.forEach(
    Array.from({ length: streams }, (_, s) => s),
    (s) =>
      EventStore.append(
        `${category}-s${s}`,
        category,
        ExpectedVersion.NoStream,
        Array.from({ length: perStream }, (_, i) => ev(s * perStream + i))
      ),
    { discard: true }
  )

/**
 * Registers the catch-up suite (page size, batch retries and order).
 *
 * @since 0.1.0
 * @category suites
 */
export const catchUpSuite = <E>(name: string, storeLayer: Layer.Layer<Env, E>) =>
  describe(`catch-up (${name})`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("a subscription without batchSize delivers pages of 1000 events", () =>
        Effect.scoped(
          Effect.gen(function* () {
            assert.strictEqual(Subscription.defaultBatchSize, 1000)
            const category = unique("cupage")
            yield* seed(category, 15, 100)
            // Each page's length is asserted: every seeded event must be readable at the first poll.
            yield* untilCommitSafe
            const sub = yield* Subscription.make({ subscriptionId: unique("cu-page-"), categories: [category] })
            const first = yield* sub.poll
            const second = yield* sub.poll
            assert.deepStrictEqual([first.length, second.length], [1000, 500])
          })
        )
      )

      it.effect("a runner without batchSize handles batches of 1000 events (rebuild progress per batch)", () =>
        Effect.gen(function* () {
          const category = unique("curun")
          yield* seed(category, 15, 100)
          yield* untilCommitSafe
          const progress: Array<number> = []
          const projection = Projection.atLeastOnce({
            subscriptionId: unique("cu-run-"),
            categories: [category],
            handle: () => Effect.void
          })
          const result = yield* ProjectionRunner.rebuild(projection, { workerId: "cu-rebuilder" }, (p) =>
            Effect.sync(() => void progress.push(p.done))
          )
          assert.deepStrictEqual(progress, [0, 1000, 1500])
          assert.deepStrictEqual(result, { done: 1500, total: 1500 })
        })
      )

      it.effect("at-least-once: a failing event is retried alone, then the batch goes on in order", () =>
        Effect.scoped(
          Effect.gen(function* () {
            const category = unique("curetry")
            yield* seed(category, 2, 5)
            const seen: Array<number> = []
            let failures = 0
            const subscriptionId = unique("cu-retry-")
            const projection = Projection.atLeastOnce({
              subscriptionId,
              categories: [category],
              handle: ({ event }) =>
                Effect.suspend(() => {
                  const i = Number(event.data.i)
                  seen.push(i)
                  // Event 3 fails twice, then succeeds; event 7 dies once.
                  if (i === 3 && failures < 2) {
                    failures++
                    return Effect.fail("not yet")
                  }
                  if (i === 7 && failures === 2) {
                    failures++
                    return Effect.die("boom")
                  }
                  return Effect.void
                })
            })
            const runner = yield* ProjectionRunner.run([projection], {
              workerId: "cu-retry",
              pollInterval: "50 millis",
              retry: Schedule.spaced("1 millis")
            })
            yield* waitUntil(Effect.sync(() => seen.length >= 13), "every event handled")
            yield* runner.whenCaughtUp(subscriptionId)
            assert.deepStrictEqual(seen, [0, 1, 2, 3, 3, 3, 4, 5, 6, 7, 7, 8, 9])
            const [status] = yield* runner.status
            assert.strictEqual(status?.handled, 10)
            assert.strictEqual(status?.state, "leader")
          })
        )
      )
    })
  })
