/**
 * The subscription contract (ordering across inverted commits, hold-back,
 * checkpoints, wake-ups), run against every store.
 *
 * @since 0.1.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as Cursor from "../Cursor.js"
import * as EventStore from "../EventStore.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import type { NewEvent, RecordedEvent } from "../RecordedEvent.js"
import * as Subscription from "../Subscription.js"
import * as Checkpoint from "../Checkpoint.js"
import * as SubscriptionStore from "../SubscriptionStore.js"
import { Raw, unique } from "./fixtures.js"
import { begin, collectUntil, perStreamOrdered } from "./scopes.js"

const ev = (mark: string): NewEvent => ({ eventType: "ordering.marked", schemaVersion: 1, data: { mark } })

const cursorOf = (streamId: string, version: number) =>
  Effect.map(
    Stream.runHead(EventStore.readStream(streamId, { from: version, limit: 1 })),
    (e) => Cursor.of(Option.getOrThrow(e))
  )

/** Tx A takes its xid early; tx B creates v1 and commits; A appends v2 and commits: v2 sorts before v1. */
const invertedPair = (category: string, stream: string) =>
  Effect.gen(function* () {
    const a = yield* begin
    yield* EventStore.append(stream, category, ExpectedVersion.NoStream, [ev("v1")])
    yield* a.run(EventStore.append(stream, category, ExpectedVersion.Exact(1), [ev("v2")]))
    yield* a.commit
  })

const versionsOf = (events: ReadonlyArray<RecordedEvent>, stream: string) =>
  events.filter((e) => e.streamId === stream).map((e) => e.streamVersion)

/**
 * Registers the subscription suite.
 *
 * @since 0.1.0
 * @category suites
 */
export const subscriptionSuite = (
  name: string,
  storeLayer: Layer.Layer<EventStore.EventStore | SubscriptionStore.SubscriptionStore | Raw>
) =>
  describe(`subscriptions: ${name}`, () => {
    layer(storeLayer, { timeout: "180 seconds", excludeTestServices: true })((it) => {
      it.scoped("same_batch_inversion_is_reordered", () =>
        Effect.gen(function* () {
          const category = unique("ordsb")
          const stream = `${category}-s1`
          const sub = yield* Subscription.make({ subscriptionId: unique("ord-sb-"), categories: [category], batchSize: 100 })
          yield* invertedPair(category, stream)
          const got = yield* collectUntil(sub, (g) => g.length >= 2)
          assert.strictEqual(got.length, 2)
          assert.deepStrictEqual(versionsOf(got, stream), [1, 2])
        }))

      it.scoped("limit_cut_does_not_split_inversion", () =>
        Effect.gen(function* () {
          const category = unique("ordlc")
          const stream = `${category}-s1`
          const sub = yield* Subscription.make({ subscriptionId: unique("ord-lc-"), categories: [category], batchSize: 1 })
          yield* invertedPair(category, stream)
          const got = yield* collectUntil(sub, (g) => g.length >= 2)
          assert.isTrue(perStreamOrdered(got))
          assert.deepStrictEqual(versionsOf(got, stream), [1, 2])
        }))

      it.scoped("cross_poll_inversion_is_held_back", () =>
        Effect.gen(function* () {
          const category = unique("ordcp")
          const stream = `${category}-s1`
          const sub = yield* Subscription.make({ subscriptionId: unique("ord-cp-"), categories: [category] })
          // xid order A < C(pin) < B: while C is open the guard admits v2 (A) but not v1 (B).
          const a = yield* begin
          const pin = yield* begin
          yield* EventStore.append(stream, category, ExpectedVersion.NoStream, [ev("v1")])
          yield* a.run(EventStore.append(stream, category, ExpectedVersion.Exact(1), [ev("v2")]))
          yield* a.commit
          const probeEnd = Date.now() + 800
          while (Date.now() < probeEnd) {
            const got = yield* sub.poll
            assert.deepStrictEqual(got.map((e) => e.streamVersion), [], "nothing may be delivered while v1 is blocked")
            yield* Effect.sleep("25 millis")
          }
          yield* pin.rollback
          const got = yield* collectUntil(sub, (g) => g.length >= 2)
          assert.deepStrictEqual(versionsOf(got, stream), [1, 2])
        }))

      it.scoped("unrelated_streams_flow_during_holdback_and_checkpoint_lags", () =>
        Effect.gen(function* () {
          const store = yield* SubscriptionStore.SubscriptionStore
          const category = unique("ordfl")
          const streamS = `${category}-s`
          const streamT = `${category}-t`
          const subscriptionId = unique("ord-fl-")
          const sub = yield* Subscription.make({ subscriptionId, categories: [category] })
          // xid order A < D < C(pin) < B.
          const a = yield* begin
          const d = yield* begin
          const pin = yield* begin
          yield* EventStore.append(streamS, category, ExpectedVersion.NoStream, [ev("v1")])
          yield* a.run(EventStore.append(streamS, category, ExpectedVersion.Exact(1), [ev("v2")]))
          yield* a.commit
          yield* d.run(EventStore.append(streamT, category, ExpectedVersion.NoStream, [ev("t1")]))
          yield* d.commit
          const got = yield* collectUntil(sub, (g) => g.some((e) => e.streamId === streamT))
          assert.deepStrictEqual(versionsOf(got, streamS), [], "S's v2 must be held while its v1 is undeliverable")
          yield* sub.checkpoint()
          const v2 = yield* cursorOf(streamS, 2)
          const cp = Option.getOrThrow(yield* store.readCheckpoint(subscriptionId)).cursor
          assert.isTrue(Cursor.order(cp, v2) < 0, `checkpoint ${Cursor.format(cp)} must lag behind ${Cursor.format(v2)}`)
          yield* pin.rollback
          const sub2 = yield* Subscription.make({ subscriptionId, categories: [category] })
          const again = yield* collectUntil(sub2, (g) => versionsOf(g, streamS).join() === "1,2")
          assert.isTrue(perStreamOrdered(again))
        }))

      it.scoped("legacy_inverted_checkpoint_trips_backstop_loudly", () =>
        Effect.gen(function* () {
          const store = yield* SubscriptionStore.SubscriptionStore
          const category = unique("ordbs")
          const stream = `${category}-s1`
          const subscriptionId = unique("ord-bs-")
          yield* invertedPair(category, stream)
          // A checkpoint that older code wrote exactly on v2, which sorts before v1.
          yield* store.writeCheckpoint(subscriptionId, Checkpoint.at(yield* cursorOf(stream, 2)), Option.none())
          const sub = yield* Subscription.make({ subscriptionId, categories: [category] })
          const start = Date.now()
          for (;;) {
            const result = yield* Effect.either(sub.poll)
            if (result._tag === "Left") {
              const error = result.left
              assert.strictEqual(error._tag, "OrderingViolation")
              if (error._tag === "OrderingViolation") {
                assert.strictEqual(error.streamId, stream)
                assert.strictEqual(error.version, 1)
                assert.strictEqual(error.lastDelivered, 2)
                assert.strictEqual(error.subscriptionId, subscriptionId)
              }
              break
            }
            assert.deepStrictEqual(result.right, [], "v1 must not be delivered after a checkpoint that passed v2")
            assert.isBelow(Date.now() - start, 30_000, "timed out waiting for the backstop to trip")
            yield* Effect.sleep("25 millis")
          }
        }))

      const chaos = (streams: number, eventsPerStream: number) =>
        Effect.gen(function* () {
          const category = unique("ordch")
          const sub = yield* Subscription.make({ subscriptionId: unique("ord-ch-"), categories: [category], batchSize: 7 })
          let stop = false
          const pins = yield* Effect.fork(
            Effect.gen(function* () {
              while (!stop) {
                const pin = yield* begin
                yield* Effect.sleep("15 millis")
                yield* pin.rollback
              }
            })
          )
          yield* Effect.forEach(
            Array.from({ length: streams }, (_, s) => s),
            (s) =>
              Effect.gen(function* () {
                const stream = `${category}-s${s}`
                for (let v = 1; v <= eventsPerStream; v++) {
                  const expected = v === 1 ? ExpectedVersion.NoStream : ExpectedVersion.Exact(v - 1)
                  if (v % 2 === 0) {
                    const scope = yield* begin
                    yield* Effect.sleep(`${3 + (v % 7)} millis`)
                    yield* scope.run(EventStore.append(stream, category, expected, [ev(`v${v}`)]).pipe(Effect.orDie))
                    yield* scope.commit
                  } else {
                    yield* EventStore.append(stream, category, expected, [ev(`v${v}`)])
                  }
                }
              }),
            { concurrency: "unbounded", discard: true }
          )
          stop = true
          yield* Fiber.join(pins)
          const total = streams * eventsPerStream
          const got = yield* collectUntil(sub, (g) => g.length >= total, 60_000)
          assert.strictEqual(got.length, total)
          assert.isTrue(perStreamOrdered(got))
          const expected = Array.from({ length: eventsPerStream }, (_, i) => i + 1)
          for (let s = 0; s < streams; s++) assert.deepStrictEqual(versionsOf(got, `${category}-s${s}`), expected)
        })

      it.scoped("chaos_concurrent_scopes_never_regress_per_stream_order", () => chaos(4, 20))
      it.scoped("chaos_concurrent_scopes_never_regress_per_stream_order (8 streams x 100 events)", () => chaos(8, 100), {
        timeout: 180_000
      })

      it.scoped("a restart while an event is held neither redelivers nor trips the backstop", () =>
        Effect.gen(function* () {
          const category = unique("ordhr")
          const [x, y] = [`${category}-x`, `${category}-y`]
          const subscriptionId = unique("ord-hr-")
          const sub = yield* Subscription.make({ subscriptionId, categories: [category] })
          // xid order: A < X1 < X2 < P(pin) < Y1. A appends X v3 and Y v2 with its early xid, so both
          // sort first; X v1, v2 are deliverable, Y v1 is not while P is open: Y v2 is held.
          const a = yield* begin
          yield* EventStore.append(x, category, ExpectedVersion.NoStream, [ev("x1")])
          yield* EventStore.append(x, category, ExpectedVersion.Exact(1), [ev("x2")])
          const pin = yield* begin
          yield* EventStore.append(y, category, ExpectedVersion.NoStream, [ev("y1")])
          yield* a.run(EventStore.append(x, category, ExpectedVersion.Exact(2), [ev("x3")]))
          yield* a.run(EventStore.append(y, category, ExpectedVersion.Exact(1), [ev("y2")]))
          yield* a.commit
          const first = yield* collectUntil(sub, (g) => versionsOf(g, x).length >= 3)
          assert.deepStrictEqual(versionsOf(first, x), [1, 2, 3])
          assert.deepStrictEqual(versionsOf(first, y), [])
          // The checkpoint stays before the held Y v2, which sorts after X v3 but before X v1 and v2.
          yield* sub.checkpoint()
          const sub2 = yield* Subscription.make({ subscriptionId, categories: [category] })
          yield* pin.rollback
          const second = yield* collectUntil(sub2, (g) => versionsOf(g, y).length >= 2)
          assert.deepStrictEqual(versionsOf(second, y), [1, 2])
          assert.deepStrictEqual(versionsOf(second, x), [], "X's events were delivered before the restart")
        }))

      it.scoped("restart_replay_does_not_trip_backstop", () =>
        Effect.gen(function* () {
          const category = unique("ordrs")
          const stream = `${category}-s1`
          const sub = yield* Subscription.make({ subscriptionId: unique("ord-rs-"), categories: [category] })
          yield* EventStore.append(stream, category, ExpectedVersion.NoStream, [ev("v1")])
          yield* EventStore.append(stream, category, ExpectedVersion.Exact(1), [ev("v2")])
          const got = yield* collectUntil(sub, (g) => g.length >= 2)
          assert.isTrue(perStreamOrdered(got))
          yield* sub.reset()
          const replay = yield* collectUntil(sub, (g) => g.length >= 2)
          assert.deepStrictEqual(versionsOf(replay, stream), [1, 2])
          // Reset to a given cursor replays from there.
          yield* sub.reset(yield* cursorOf(stream, 1))
          const tail = yield* collectUntil(sub, (g) => g.length >= 1)
          assert.deepStrictEqual(versionsOf(tail, stream), [2])
        }))

      it.scoped("reset to a cursor inside the inverted pair delivers v1 then v2, also after a restart", () =>
        Effect.gen(function* () {
          const category = unique("ordrc")
          const [stream, other] = [`${category}-s1`, `${category}-u`]
          const subscriptionId = unique("ord-rc-")
          // A takes its xid first; v1 commits with a later xid; A appends v2 and then u1: v2 < u1 < v1 in cursor order.
          const a = yield* begin
          yield* EventStore.append(stream, category, ExpectedVersion.NoStream, [ev("v1")])
          yield* a.run(EventStore.append(stream, category, ExpectedVersion.Exact(1), [ev("v2")]))
          yield* a.run(EventStore.append(other, category, ExpectedVersion.NoStream, [ev("u1")]))
          yield* a.commit
          const [v1, v2, u1] = [yield* cursorOf(stream, 1), yield* cursorOf(stream, 2), yield* cursorOf(other, 1)]
          assert.isTrue(Cursor.order(v2, u1) < 0 && Cursor.order(u1, v1) < 0, "v2 < u1 < v1 in cursor order")
          const sub = yield* Subscription.make({ subscriptionId, categories: [category] })
          const first = yield* collectUntil(sub, (g) => g.length >= 3)
          assert.deepStrictEqual(versionsOf(first, stream), [1, 2])
          for (const cut of [v2, u1]) {
            // Reset between v2 and v1: v2 was not deliverable there (v1 was not), u1 was delivered iff cut >= u1.
            yield* sub.reset(cut)
            const replay = yield* collectUntil(sub, (g) => versionsOf(g, stream).length >= 2)
            assert.deepStrictEqual(versionsOf(replay, stream), [1, 2], `reset to ${Cursor.format(cut)}`)
            assert.deepStrictEqual(versionsOf(replay, other), Cursor.order(cut, u1) < 0 ? [1] : [])
            assert.deepStrictEqual(yield* sub.poll, [])
            // The reset is persisted: a restart from it delivers the same, in order.
            yield* sub.reset(cut)
            const restarted = yield* Subscription.make({ subscriptionId, categories: [category] })
            const again = yield* collectUntil(restarted, (g) => versionsOf(g, stream).length >= 2)
            assert.deepStrictEqual(versionsOf(again, stream), [1, 2], `restart after reset to ${Cursor.format(cut)}`)
            assert.deepStrictEqual(versionsOf(again, other), Cursor.order(cut, u1) < 0 ? [1] : [])
          }
        }))

      it.scoped("an open uncommitted append pauses delivery; commit and rollback resume it, nothing skipped", () =>
        Effect.gen(function* () {
          const category = unique("ordun")
          const sub = yield* Subscription.make({ subscriptionId: unique("ord-un-"), categories: [category] })
          const quiet = (millis: number) =>
            Effect.gen(function* () {
              const end = Date.now() + millis
              while (Date.now() < end) {
                assert.deepStrictEqual((yield* sub.poll).map((e) => e.streamId), [])
                yield* Effect.sleep("25 millis")
              }
            })
          const x = yield* begin
          yield* x.run(EventStore.append(`${category}-p`, category, ExpectedVersion.NoStream, [ev("p1")]))
          yield* EventStore.append(`${category}-q`, category, ExpectedVersion.NoStream, [ev("q1")])
          yield* EventStore.append(`${category}-r`, category, ExpectedVersion.NoStream, [ev("r1")])
          yield* quiet(500)
          yield* x.commit
          const first = yield* collectUntil(sub, (g) => g.length >= 3)
          assert.deepStrictEqual(first.map((e) => e.streamId).sort(), [`${category}-p`, `${category}-q`, `${category}-r`])
          const y = yield* begin
          yield* y.run(EventStore.append(`${category}-y`, category, ExpectedVersion.NoStream, [ev("y1")]))
          yield* EventStore.append(`${category}-z`, category, ExpectedVersion.NoStream, [ev("z1")])
          yield* quiet(500)
          yield* y.rollback
          const second = yield* collectUntil(sub, (g) => g.length >= 1)
          assert.deepStrictEqual(second.map((e) => e.streamId), [`${category}-z`])
          assert.deepStrictEqual(yield* sub.poll, [])
        }))

      it.scoped("64 concurrent writers, 20k events, mixed appends: each delivered exactly once, in stream order", () =>
        Effect.gen(function* () {
          const category = unique("ord64")
          const sub = yield* Subscription.make({ subscriptionId: unique("ord-64-"), categories: [category], batchSize: 500 })
          const writers = 64
          const perWriter = 320
          const total = writers * perWriter
          const collected: Array<RecordedEvent> = []
          const collector = yield* Effect.fork(
            sub.batches.pipe(
              Stream.tap((batch) => Effect.sync(() => collected.push(...batch))),
              Stream.takeUntil(() => collected.length >= total),
              Stream.runDrain
            )
          )
          yield* Effect.forEach(
            Array.from({ length: writers }, (_, w) => w),
            (w) =>
              Effect.gen(function* () {
                const [a, b] = [`${category}-w${w}a`, `${category}-w${w}b`]
                let written = 0
                let round = 0
                while (written < perWriter) {
                  const mode = round++ % 3
                  if (mode === 0) {
                    yield* EventStore.append(a, category, ExpectedVersion.Any, [ev("single")])
                    written += 1
                  } else if (mode === 1) {
                    const n = Math.min(5, (perWriter - written) >> 1)
                    if (n === 0) continue
                    yield* EventStore.appendMany([
                      { streamId: a, category, expected: ExpectedVersion.Any, events: Array.from({ length: n }, () => ev("batch")) },
                      { streamId: b, category, expected: ExpectedVersion.Any, events: Array.from({ length: n }, () => ev("batch")) }
                    ])
                    written += 2 * n
                  } else {
                    const scope = yield* begin
                    const n = Math.min(3, perWriter - written)
                    yield* scope.run(EventStore.append(b, category, ExpectedVersion.Any, Array.from({ length: n }, () => ev("scope"))))
                    yield* scope.commit
                    written += n
                  }
                }
              }),
            { concurrency: "unbounded", discard: true }
          )
          yield* Fiber.join(collector).pipe(Effect.timeout("120 seconds"))
          assert.strictEqual(collected.length, total)
          assert.strictEqual(new Set(collected.map((e) => e.eventId)).size, total)
          assert.isTrue(perStreamOrdered(collected))
          const last = new Map<string, number>()
          for (const e of collected) {
            assert.strictEqual(e.streamVersion, (last.get(e.streamId) ?? 0) + 1, `gap in ${e.streamId}`)
            last.set(e.streamId, e.streamVersion)
          }
        }), { timeout: 180_000 })

      it.scoped("a notification wakes a waiting subscription well before its poll interval", () =>
        Effect.gen(function* () {
          const category = unique("ordwk")
          const sub = yield* Subscription.make({
            subscriptionId: unique("ord-wk-"),
            categories: [category],
            pollInterval: "20 seconds"
          })
          let deliveredAt = 0
          const consumer = yield* Effect.fork(
            sub.batches.pipe(
              Stream.take(1),
              Stream.runForEach(() => Effect.sync(() => (deliveredAt = Date.now())))
            )
          )
          // The listener attaches asynchronously: append until one append is seen within the bound.
          let latency = Number.POSITIVE_INFINITY
          for (let attempt = 0; attempt < 8 && deliveredAt === 0; attempt++) {
            yield* Effect.sleep("100 millis")
            const appendedAt = Date.now()
            yield* EventStore.append(`${category}-s${attempt}`, category, ExpectedVersion.NoStream, [ev("wake")])
            // Generous for a loaded machine, yet far below the 20 s poll interval: only a wake-up delivers in time.
            const deadline = appendedAt + 6000
            while (deliveredAt === 0 && Date.now() < deadline) yield* Effect.sleep("5 millis")
            if (deliveredAt !== 0) latency = deliveredAt - appendedAt
          }
          yield* Fiber.join(consumer)
          console.log(`[subscriptions: ${name}] wake-up latency: ${latency} ms (poll interval 20 s)`)
          assert.isBelow(latency, 5000)
        }))

      it.scoped("a subscription over a list of categories, or the whole log, sees exactly those", () =>
        Effect.gen(function* () {
          const [a, b, c] = [unique("cata"), unique("catb"), unique("catc")]
          const both = yield* Subscription.make({ subscriptionId: unique("cats-"), categories: [a, b], batchSize: 2 })
          // The whole log holds every earlier test's events: large pages keep this read quick on a loaded machine.
          const all = yield* Subscription.make({ subscriptionId: unique("all-"), batchSize: 1000 })
          for (const category of [a, b, c, a]) {
            yield* EventStore.append(`${category}-s`, category, ExpectedVersion.Any, [ev(category)])
          }
          const got = yield* collectUntil(both, (g) => g.length >= 3)
          assert.deepStrictEqual(got.map((e) => e.category), [a, b, a])
          const everything = yield* collectUntil(all, (g) => g.filter((e) => [a, b, c].includes(e.category)).length >= 4)
          assert.deepStrictEqual(
            everything.filter((e) => [a, b, c].includes(e.category)).map((e) => e.category),
            [a, b, c, a]
          )
          const bad = yield* Effect.flip(Subscription.make({ subscriptionId: "x", categories: ["no-dash"] }))
          assert.strictEqual(bad._tag, "InvalidInput")
        }))

      it.scoped("lag and the oldest transaction holding the horizon are visible", () =>
        Effect.gen(function* () {
          const category = unique("ordlg")
          const sub = yield* Subscription.make({ subscriptionId: unique("ord-lg-"), categories: [category] })
          yield* EventStore.append(`${category}-s`, category, ExpectedVersion.NoStream, [ev("1"), ev("2"), ev("3")])
          const pin = yield* begin
          yield* Effect.sleep("50 millis")
          const lag = yield* sub.lag
          assert.strictEqual(lag.events, 3)
          assert.isAtLeast(lag.ageMillis, 0)
          assert.isAtLeast(lag.oldestTransactionMillis, 40)
          yield* pin.rollback
          yield* collectUntil(sub, (g) => g.length >= 3)
          yield* sub.checkpoint()
          assert.strictEqual((yield* sub.lag).events, 0)
          const all = yield* Stream.runCollect(EventStore.readCategory(category))
          assert.strictEqual(Chunk.size(all), 3)
        }))

      // Last: it deletes a row (and puts one back), which any whole-log reader running meanwhile would see.
      it.scoped("a deleted version fails the subscription with MissingVersion instead of holding the stream forever", () =>
        Effect.gen(function* () {
          const raw = yield* Raw
          const category = unique("ordmv")
          const [stream, other] = [`${category}-s`, `${category}-t`]
          const subscriptionId = unique("ord-mv-")
          for (let v = 1; v <= 3; v++) {
            yield* EventStore.append(stream, category, v === 1 ? ExpectedVersion.NoStream : ExpectedVersion.Exact(v - 1), [
              ev(`v${v}`)
            ])
          }
          yield* EventStore.append(other, category, ExpectedVersion.NoStream, [ev("t1")])
          yield* raw.deleteEvent(stream, 2)
          // Read both ways: in one page, and one event per page (v3 held alone in a full page).
          for (const batchSize of [100, 1]) {
            const sub = yield* Subscription.make({ subscriptionId: `${subscriptionId}${batchSize}`, categories: [category], batchSize })
            const start = Date.now()
            for (;;) {
              const result = yield* Effect.either(sub.poll)
              if (result._tag === "Left") {
                const error = result.left
                assert.strictEqual(error._tag, "MissingVersion", String(error))
                if (error._tag === "MissingVersion") {
                  assert.strictEqual(error.subscriptionId, `${subscriptionId}${batchSize}`)
                  assert.strictEqual(error.streamId, stream)
                  assert.strictEqual(error.missing, 2)
                  assert.strictEqual(error.seen, 3)
                  assert.include(error.message, `${stream} v2 is missing`)
                }
                break
              }
              assert.isBelow(Date.now() - start, 30_000, "timed out: the stream is held silently")
              yield* Effect.sleep("25 millis")
            }
            // It stays failed: the stream is not delivered past the gap, and the checkpoint stays before v3.
            const again = yield* Effect.either(sub.poll)
            assert.strictEqual(again._tag === "Left" ? again.left._tag : "delivered", "MissingVersion")
            const { checkpoint } = yield* sub.position
            assert.isTrue(Cursor.order(checkpoint.cursor, yield* cursorOf(stream, 3)) < 0)
          }
          // Mend the log for whatever reads it whole later.
          yield* raw.insert({ streamId: stream, category, version: 2, eventType: "ordering.marked", schemaVersion: 1, data: { mark: "v2" } })
        }))
    })
  })
