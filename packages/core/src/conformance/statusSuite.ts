/**
 * What a store records for status (categories, failures), and wake-ups
 * filtered by category, run against every store.
 *
 * @since 0.1.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as EventStore from "../EventStore.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import * as Metrics from "../Metrics.js"
import type { NewEvent } from "../RecordedEvent.js"
import * as Subscription from "../Subscription.js"
import * as SubscriptionStore from "../SubscriptionStore.js"
import { Raw, unique } from "./fixtures.js"

const ev = (mark: string): NewEvent => ({ eventType: "status.marked", schemaVersion: 1, data: { mark } })

/** How many wake-ups with this payload the subscription took (the `mire_subscription_wakeups` frequency). */
const wakeupsOf = (subscriptionId: string, payload: string) =>
  Effect.map(Metric.value(Metric.tagged(Metrics.wakeups, "subscription", subscriptionId)), (state) =>
    state.occurrences.get(payload) ?? 0
  )

/** Polls `check` until it holds, for at most 20 s of real time. */
const eventually = <R>(check: Effect.Effect<boolean, unknown, R>, what: string) =>
  check.pipe(
    Effect.flatMap((ok) => (ok ? Effect.void : Effect.fail(what))),
    Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo("20 seconds"))),
    Effect.orDieWith((what) => new Error(`timed out waiting for ${String(what)}`))
  )

/**
 * Registers the status suite (categories and failures recorded per
 * subscription, category-filtered wake-ups).
 *
 * @since 0.1.0
 * @category suites
 */
export const statusSuite = (
  name: string,
  storeLayer: Layer.Layer<EventStore.EventStore | SubscriptionStore.SubscriptionStore | Raw>
) =>
  describe(`subscription status: ${name}`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.scoped("a subscription of category A is woken by appends to A, not by appends to B", () =>
        Effect.gen(function* () {
          const [a, b] = [unique("wka"), unique("wkb")]
          const subscriptionId = unique("wake-")
          // A huge poll interval: only notifications wake it.
          yield* Subscription.make({ subscriptionId, categories: [a], pollInterval: "1 hour" })
          // Appends to A until one wakes it (its listener starts in the background): then it is listening.
          yield* eventually(
            Effect.zipRight(
              EventStore.append(`${a}-0`, a, ExpectedVersion.Any, [ev("a0")]),
              Effect.map(wakeupsOf(subscriptionId, a), (n) => n >= 1)
            ),
            "the first wake-up by A"
          )
          const before = yield* wakeupsOf(subscriptionId, a)
          for (let i = 1; i <= 3; i++) yield* EventStore.append(`${b}-${i}`, b, ExpectedVersion.NoStream, [ev("b")])
          yield* EventStore.append(`${a}-1`, a, ExpectedVersion.NoStream, [ev("a1")])
          // Notifications arrive in commit order: once A's next one is taken, B's were seen (and dropped).
          yield* eventually(Effect.map(wakeupsOf(subscriptionId, a), (n) => n > before), "the wake-up by A")
          assert.strictEqual(yield* wakeupsOf(subscriptionId, b), 0, "appends to B woke a subscription of A")
        }))

      it.scoped("the store records a subscription's categories, its failure (MissingVersion) and clears it on reset", () =>
        Effect.gen(function* () {
          const store = yield* SubscriptionStore.SubscriptionStore
          const raw = yield* Raw
          const category = unique("stmv")
          const stream = `${category}-s`
          const subscriptionId = unique("st-mv-")
          const sub = yield* Subscription.make({ subscriptionId, categories: [category] })
          assert.isTrue(Option.isNone(yield* store.report(subscriptionId)), "no row before the first checkpoint")
          yield* sub.checkpoint()
          const described = Option.getOrThrow(yield* store.report(subscriptionId))
          assert.deepStrictEqual(Option.getOrThrow(described.categories), [category])
          assert.isTrue(Option.isNone(described.failure))

          for (let v = 1; v <= 3; v++) {
            yield* EventStore.append(stream, category, v === 1 ? ExpectedVersion.NoStream : ExpectedVersion.Exact(v - 1), [
              ev(`v${v}`)
            ])
          }
          yield* raw.deleteEvent(stream, 2)
          const error = yield* sub.poll.pipe(
            Effect.flatMap(() => Effect.fail("not yet" as const)),
            Effect.retry({ while: (e) => e === "not yet", schedule: Schedule.spaced("20 millis").pipe(Schedule.upTo("20 seconds")) }),
            Effect.flip
          )
          assert.strictEqual(typeof error === "string" ? error : error._tag, "MissingVersion")
          const failure = Option.getOrThrow(Option.getOrThrow(yield* store.report(subscriptionId)).failure)
          assert.include(failure.message, "MissingVersion")
          assert.include(failure.message, `${stream} v2 is missing`)
          assert.instanceOf(failure.at, Date)

          // A reset clears it (and a plain subscription's categories are all: recorded as none).
          yield* raw.insert({ streamId: stream, category, version: 2, eventType: "status.marked", schemaVersion: 1, data: { mark: "v2" } })
          yield* sub.reset()
          assert.isTrue(Option.isNone(Option.getOrThrow(yield* store.report(subscriptionId)).failure), "reset clears the failure")
          const all = unique("st-all-")
          const whole = yield* Subscription.make({ subscriptionId: all })
          yield* whole.checkpoint()
          assert.isTrue(Option.isNone(Option.getOrThrow(yield* store.report(all)).categories))
        }))
    })
  })
