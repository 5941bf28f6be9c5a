/**
 * Restarts across an inversion (a lower version committed after a higher
 * one, under a later transaction id), run against every store:
 * versions a checkpoint records as delivered past its cursor are skipped when
 * read again, even when a stream's highest version sorts before a lower one
 * and the subscription forgets every stream behind its cursor
 * (`retainStreams: 0`).
 *
 * @since 0.1.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as Cursor from "../Cursor.js"
import * as EventStore from "../EventStore.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import type { NewEvent, RecordedEvent } from "../RecordedEvent.js"
import * as Subscription from "../Subscription.js"
import type * as SubscriptionStore from "../SubscriptionStore.js"
import { Raw, unique } from "./fixtures.js"
import { begin, collectUntil, perStreamOrdered, untilCommitSafe } from "./scopes.js"

const ev = (mark: string): NewEvent => ({ eventType: "ordering.marked", schemaVersion: 1, data: { mark } })

const cursorOf = (streamId: string, version: number) =>
  Effect.map(
    Stream.runHead(EventStore.readStream(streamId, { from: version, limit: 1 })),
    (e) => Cursor.of(Option.getOrThrow(e))
  )

const versionsOf = (events: ReadonlyArray<RecordedEvent>, stream: string) =>
  events.filter((e) => e.streamId === stream).map((e) => e.streamVersion)

/**
 * The log, in cursor order: s v1-v3, b v2, s v5, s v4, b v1 (each inverted
 * pair built the same way: the higher version's transaction takes its id
 * first; the lower version commits with a later id before it appends).
 */
const invertedLog = (category: string, s: string, b: string) =>
  Effect.gen(function* () {
    yield* EventStore.append(s, category, ExpectedVersion.NoStream, [ev("s1"), ev("s2"), ev("s3")])
    const holdsB = yield* begin
    const holdsS = yield* begin
    yield* EventStore.append(s, category, ExpectedVersion.Exact(3), [ev("s4")])
    yield* holdsS.run(EventStore.append(s, category, ExpectedVersion.Exact(4), [ev("s5")]))
    yield* holdsS.commit
    yield* EventStore.append(b, category, ExpectedVersion.NoStream, [ev("b1")])
    yield* holdsB.run(EventStore.append(b, category, ExpectedVersion.Exact(1), [ev("b2")]))
    yield* holdsB.commit
    // The pages the tests assert are the whole log's: every event must be readable at once.
    yield* untilCommitSafe
    const [s4, s5, b1, b2] = [yield* cursorOf(s, 4), yield* cursorOf(s, 5), yield* cursorOf(b, 1), yield* cursorOf(b, 2)]
    assert.isTrue(
      Cursor.order(b2, s5) < 0 && Cursor.order(s5, s4) < 0 && Cursor.order(s4, b1) < 0,
      "b2 < s5 < s4 < b1 in cursor order"
    )
    return { s5 }
  })

/**
 * Registers the hold-back restart suite: after 1 and 2 restarts nothing is
 * delivered twice or out of order.
 *
 * @since 0.1.0
 * @category suites
 */
export const holdBackRestartSuite = (
  name: string,
  storeLayer: Layer.Layer<EventStore.EventStore | SubscriptionStore.SubscriptionStore | Raw>
) =>
  describe(`hold-back across restarts: ${name}`, () => {
    layer(storeLayer, { timeout: "180 seconds", excludeTestServices: true })((it) => {
      for (const restarts of [1, 2]) {
        it.scoped(
          `a stream whose v5 sorts before v4, skipped after ${restarts} restart(s) with retainStreams 0, is delivered in order with no OrderingViolation`,
          () =>
            Effect.gen(function* () {
              const raw = yield* Raw
              const category = unique("hbrs")
              const [s, b] = [`${category}-s`, `${category}-b`]
              const subscriptionId = unique("hb-rs-")
              const { s5 } = yield* invertedLog(category, s, b)
              const open = (batchSize: number) =>
                Subscription.make({ subscriptionId, categories: [category], batchSize, retainStreams: 0 })

              // Before the restart: pages [s1 s2 s3] and [b2 s5 s4]; b2 is held (b1 not read), s1-s5 delivered.
              const before = yield* open(3)
              const first = yield* collectUntil(before, (g) => versionsOf(g, s).length >= 5)
              assert.deepStrictEqual(versionsOf(first, s), [1, 2, 3, 4, 5])
              assert.deepStrictEqual(versionsOf(first, b), [])
              const persisted = (yield* before.position).checkpoint
              assert.isTrue(Cursor.order(persisted.cursor, s5) < 0, "the checkpoint's cursor is before s v5 (b v2 is held)")
              assert.deepStrictEqual(persisted.delivered, new Map([[s, 5]]))
              assert.isTrue(yield* before.checkpoint())
              // The held stream is erased (a data-protection clean-up): after the restart nothing is held.
              yield* raw.deleteEvent(b, 2)
              yield* raw.deleteEvent(b, 1)

              // Restarts one page at a time: s v5 is read (and skipped) on its own, then s v4 on a later page.
              let sub = yield* open(1)
              assert.deepStrictEqual(yield* sub.poll, [], "s v5 was delivered before the restart")
              for (let restart = 1; restart < restarts; restart++) {
                assert.isTrue(yield* sub.checkpoint())
                assert.deepStrictEqual(
                  (yield* sub.position).checkpoint.delivered,
                  new Map([[s, 5]]),
                  "s v4 is still ahead: the checkpoint records s"
                )
                sub = yield* open(1)
              }
              assert.deepStrictEqual(yield* sub.poll, [], "s v4 was delivered before the restart")

              yield* EventStore.append(s, category, ExpectedVersion.Exact(5), [ev("s6")])
              const after = yield* collectUntil(sub, (g) => versionsOf(g, s).length >= 1)
              assert.isTrue(perStreamOrdered(after))
              assert.deepStrictEqual(versionsOf(after, s), [6])
              assert.deepStrictEqual(versionsOf(after, b), [])
              // Caught up: nothing is recorded past the cursor, nothing is remembered behind it.
              assert.deepStrictEqual(yield* sub.poll, [])
              const caughtUp = yield* sub.position
              assert.strictEqual(caughtUp.checkpoint.delivered.size, 0)
              assert.strictEqual(caughtUp.remembered, 0)
            })
        )
      }
    })
  })
