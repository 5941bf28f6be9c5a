/**
 * Where a subscription starts (`Subscription.Options.startFrom`, a
 * projection's `startFrom`) and resets (`Subscription.resetTo`), run against
 * every store: the start is resolved once and persisted, an existing
 * checkpoint is never overridden, a reset is fenced, and every stream is
 * delivered in order after a start or a reset inside an inverted pair.
 *
 * @since 0.2.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"
import * as Cursor from "../Cursor.js"
import * as EventStore from "../EventStore.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import * as LeaseStore from "../LeaseStore.js"
import * as Projection from "../Projection.js"
import * as ProjectionRunner from "../ProjectionRunner.js"
import type { NewEvent, RecordedEvent } from "../RecordedEvent.js"
import * as Subscription from "../Subscription.js"
import * as SubscriptionStore from "../SubscriptionStore.js"
import { unique } from "./fixtures.js"
import { begin, collectUntil, perStreamOrdered, waitUntil } from "./scopes.js"

const ev = (mark: string): NewEvent => ({ eventType: "start.marked", schemaVersion: 1, data: { mark } })

const marks = (events: ReadonlyArray<RecordedEvent>): ReadonlyArray<unknown> => events.map((e) => e.data["mark"])

const versionsOf = (events: ReadonlyArray<RecordedEvent>, stream: string) =>
  events.filter((e) => e.streamId === stream).map((e) => e.streamVersion)

const eventAt = (streamId: string, version: number) =>
  Effect.map(Stream.runHead(EventStore.readStream(streamId, { from: version, limit: 1 })), Option.getOrThrow)

/** Everything deliverable now: polls until a poll returns nothing. */
const drain = (sub: Subscription.Subscription) =>
  Effect.gen(function* () {
    const got: Array<RecordedEvent> = []
    for (;;) {
      const page = yield* sub.poll
      if (page.length === 0) return got
      got.push(...page)
    }
  })

/** Appends one event per mark, each to its own new stream `<category>-<mark>`. */
const appendEach = (category: string, ...names: ReadonlyArray<string>) =>
  Effect.forEach(names, (mark) => EventStore.append(`${category}-${mark}`, category, ExpectedVersion.NoStream, [ev(mark)]), {
    discard: true
  })

/**
 * The log, in cursor order: s v1-v3, b v2, s v5, s v4, b v1 (each inverted
 * pair: the higher version's transaction takes its id first; the lower
 * version commits with a later id before it appends).
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
    const [s4, s5, b1, b2] = [yield* eventAt(s, 4), yield* eventAt(s, 5), yield* eventAt(b, 1), yield* eventAt(b, 2)]
    assert.isTrue(
      Cursor.eventOrder(b2, s5) < 0 && Cursor.eventOrder(s5, s4) < 0 && Cursor.eventOrder(s4, b1) < 0,
      "b2 < s5 < s4 < b1 in cursor order"
    )
    return { s4, s5 }
  })

/**
 * Registers the start and reset suite.
 *
 * @since 0.2.0
 * @category suites
 */
export const startSuite = (
  name: string,
  storeLayer: Layer.Layer<EventStore.EventStore | SubscriptionStore.SubscriptionStore | LeaseStore.LeaseStore>
) =>
  describe(`subscription start and reset: ${name}`, () => {
    layer(storeLayer, { timeout: "180 seconds", excludeTestServices: true })((it) => {
      it.scoped("startFrom head delivers only what is committed after it, and a restart keeps that start", () =>
        Effect.gen(function* () {
          const category = unique("sth")
          const subscriptionId = unique("st-head-")
          yield* appendEach(category, "a1", "a2")
          const sub = yield* Subscription.make({ subscriptionId, categories: [category], startFrom: "head" })
          yield* appendEach(category, "b1")
          assert.deepStrictEqual(marks(yield* collectUntil(sub, (got) => got.length >= 1)), ["b1"])
          // Persisted at the first start: reopened (no checkpoint written since), it starts there again, not at
          // the new head; and a start option never overrides it ("start" would replay a1, a2).
          const store = yield* SubscriptionStore.SubscriptionStore
          assert.isTrue(Option.isSome(yield* store.readCheckpoint(subscriptionId)))
          yield* appendEach(category, "b2")
          const again = yield* Subscription.make({ subscriptionId, categories: [category], startFrom: "start" })
          assert.deepStrictEqual(marks(yield* collectUntil(again, (got) => got.length >= 2)), ["b1", "b2"])
        }))

      it.scoped("startFrom head under a held-back horizon delivers exactly what is committed after it, in order, also after a restart", () =>
        Effect.gen(function* () {
          const category = unique("sthh")
          const [s, t] = [`${category}-s`, `${category}-t`]
          const subscriptionId = unique("st-hh-")
          const open = (startFrom: Subscription.StartFrom) =>
            Subscription.make({ subscriptionId, categories: [category], startFrom, batchSize: 1 })
          // Open transactions hold the horizon back: a1, s v1-v2 and t v1 commit above it before the start.
          // `late` took its id before them and appends t v2 after the start: t v2 sorts before t v1.
          const holds = yield* begin
          const late = yield* begin
          yield* appendEach(category, "a1")
          yield* EventStore.append(s, category, ExpectedVersion.NoStream, [ev("s1"), ev("s2")])
          yield* EventStore.append(t, category, ExpectedVersion.NoStream, [ev("t1")])
          const sub = yield* open("head")
          // Polls that find nothing while the horizon is held do not forget what was committed before the start;
          // a checkpoint written meanwhile keeps it for a restart.
          assert.deepStrictEqual(yield* drain(sub), [])
          assert.deepStrictEqual(yield* drain(sub), [])
          assert.isTrue(yield* sub.checkpoint())
          const restarted = yield* open("start")
          assert.deepStrictEqual(yield* drain(restarted), [])
          yield* late.run(EventStore.append(t, category, ExpectedVersion.Exact(1), [ev("t2")]))
          yield* late.commit
          yield* holds.commit
          yield* EventStore.append(s, category, ExpectedVersion.Exact(2), [ev("s3")])
          yield* appendEach(category, "b1")
          // One event per page: t v2 is delivered before t v1 is read again, and t v1 is still skipped then.
          for (const [label, reader] of [["first", sub], ["restarted", restarted], ["reopened", yield* open("start")]] as const) {
            const got = yield* collectUntil(reader, (g) => g.length >= 3)
            assert.deepStrictEqual(marks(got), ["t2", "s3", "b1"], label)
            assert.deepStrictEqual(marks(yield* drain(reader)), [], label)
          }
        }))

      it.scoped("a reset to the head under a held-back horizon delivers exactly what is committed after it", () =>
        Effect.gen(function* () {
          const category = unique("strh")
          const s = `${category}-s`
          const subscriptionId = unique("st-rh-")
          yield* appendEach(category, "a1")
          const first = yield* Subscription.make({ subscriptionId, categories: [category] })
          assert.isTrue(yield* first.checkpoint())
          // An open transaction holds the horizon back: a2 and s v1 commit above it before the reset.
          const holds = yield* begin
          yield* appendEach(category, "a2")
          yield* EventStore.append(s, category, ExpectedVersion.NoStream, [ev("s1")])
          yield* Subscription.resetTo(subscriptionId, "head")
          const sub = yield* Subscription.make({ subscriptionId, categories: [category], batchSize: 1 })
          assert.deepStrictEqual(yield* drain(sub), [])
          yield* holds.commit
          yield* EventStore.append(s, category, ExpectedVersion.Exact(1), [ev("s2")])
          yield* appendEach(category, "b1")
          assert.deepStrictEqual(marks(yield* collectUntil(sub, (g) => g.length >= 2)), ["s2", "b1"])
          assert.deepStrictEqual(marks(yield* drain(sub)), [])
        }))

      it.scoped("an existing checkpoint is never overridden by a start option", () =>
        Effect.gen(function* () {
          const category = unique("sto")
          const subscriptionId = unique("st-keep-")
          yield* appendEach(category, "a1", "a2")
          const first = yield* Subscription.make({ subscriptionId, categories: [category] })
          assert.deepStrictEqual(marks(yield* collectUntil(first, (got) => got.length >= 2)), ["a1", "a2"])
          assert.isTrue(yield* first.checkpoint())
          const at = (yield* first.position).checkpoint
          yield* appendEach(category, "b1")
          for (const startFrom of ["head", { position: 1n }, { time: new Date(0) }] as const) {
            const reopened = yield* Subscription.make({ subscriptionId, categories: [category], startFrom })
            assert.deepStrictEqual((yield* reopened.position).checkpoint, at)
            assert.deepStrictEqual(marks(yield* collectUntil(reopened, (got) => got.length >= 1)), ["b1"])
          }
        }))

      it.scoped("a row made by a lease acquisition has no checkpoint: the start option applies", () =>
        Effect.gen(function* () {
          const category = unique("stl")
          const subscriptionId = unique("st-lease-")
          const leases = yield* LeaseStore.LeaseStore
          const store = yield* SubscriptionStore.SubscriptionStore
          yield* appendEach(category, "a1")
          assert.isTrue(Option.isSome(yield* leases.acquire(subscriptionId, "w1", Duration.seconds(30))))
          assert.isTrue(Option.isNone(yield* store.readCheckpoint(subscriptionId)))
          const sub = yield* Subscription.make({ subscriptionId, categories: [category], startFrom: "head" })
          yield* appendEach(category, "b1")
          assert.deepStrictEqual(marks(yield* collectUntil(sub, (got) => got.length >= 1)), ["b1"])
          assert.deepStrictEqual(marks(yield* drain(sub)), [])
        }))

      it.scoped("startFrom a position starts at that event; a position of another category starts at the next of its own", () =>
        Effect.gen(function* () {
          const category = unique("stp")
          const other = unique("stq")
          yield* appendEach(category, "a1", "a2")
          yield* appendEach(other, "x")
          yield* appendEach(category, "a3", "a4")
          const a2 = yield* eventAt(`${category}-a2`, 1)
          const x = yield* eventAt(`${other}-x`, 1)
          const fromA2 = yield* Subscription.make({
            subscriptionId: unique("st-pos-"),
            categories: [category],
            startFrom: { position: a2.globalPosition }
          })
          assert.deepStrictEqual(marks(yield* collectUntil(fromA2, (got) => got.length >= 3)), ["a2", "a3", "a4"])
          const fromX = yield* Subscription.make({
            subscriptionId: unique("st-pos-"),
            categories: [category],
            startFrom: { position: x.globalPosition }
          })
          assert.deepStrictEqual(marks(yield* collectUntil(fromX, (got) => got.length >= 2)), ["a3", "a4"])
        }))

      it.scoped("a start past the log's last position, or not a start, is InvalidInput and writes nothing", () =>
        Effect.gen(function* () {
          const category = unique("stv")
          yield* appendEach(category, "a1")
          const last = yield* eventAt(`${category}-a1`, 1)
          const store = yield* SubscriptionStore.SubscriptionStore
          const bad: ReadonlyArray<Subscription.StartFrom> = [
            { position: last.globalPosition + 1_000_000n },
            { position: 0n },
            { position: -3n },
            { time: new Date(Number.NaN) },
            // Not a StartFrom at all (JavaScript callers, decoded config).
            JSON.parse(`{"position": 12}`)
          ]
          for (const startFrom of bad) {
            const subscriptionId = unique("st-bad-")
            const error = yield* Effect.flip(Subscription.make({ subscriptionId, categories: [category], startFrom }))
            assert.strictEqual(error._tag, "InvalidInput")
            assert.isTrue(Option.isNone(yield* store.readCheckpoint(subscriptionId)))
          }
        }))

      it.scoped("startFrom a time delivers every event recorded at or after it; a time after the last event starts at the head", () =>
        Effect.gen(function* () {
          const category = unique("stt")
          yield* appendEach(category, "a1", "a2")
          const a2 = yield* eventAt(`${category}-a2`, 1)
          // The clock moves past a2's millisecond before b1 is written, so a2 < t <= b1.
          yield* waitUntil(Effect.map(Clock.currentTimeMillis, (now) => now > a2.recordedAt.getTime() + 2), "the clock")
          yield* appendEach(category, "b1", "b2")
          const b1 = yield* eventAt(`${category}-b1`, 1)
          assert.isTrue(b1.recordedAt.getTime() > a2.recordedAt.getTime())
          const sub = yield* Subscription.make({
            subscriptionId: unique("st-time-"),
            categories: [category],
            startFrom: { time: new Date(b1.recordedAt.getTime()) }
          })
          assert.deepStrictEqual(marks(yield* collectUntil(sub, (got) => got.length >= 2)), ["b1", "b2"])
          const later = yield* Subscription.make({
            subscriptionId: unique("st-time-"),
            categories: [category],
            startFrom: { time: new Date(Date.now() + 3_600_000) }
          })
          assert.deepStrictEqual(yield* drain(later), [])
          yield* appendEach(category, "c1")
          assert.deepStrictEqual(marks(yield* collectUntil(later, (got) => got.length >= 1)), ["c1"])
        }))

      it.scoped("a start inside an inverted pair delivers every stream in order", () =>
        Effect.gen(function* () {
          const category = unique("sti")
          const [s, b] = [`${category}-s`, `${category}-b`]
          const { s4 } = yield* invertedLog(category, s, b)
          // From s v4's position: s v5 sorts before it, so the start moves back before s v5 (and b v2).
          const sub = yield* Subscription.make({
            subscriptionId: unique("st-inv-"),
            categories: [category],
            startFrom: { position: s4.globalPosition }
          })
          const got = yield* collectUntil(sub, (g) => versionsOf(g, s).length >= 2 && versionsOf(g, b).length >= 2)
          assert.isTrue(perStreamOrdered(got))
          assert.deepStrictEqual(versionsOf(got, s), [4, 5])
          assert.deepStrictEqual(versionsOf(got, b), [1, 2])
        }))

      it.scoped("reset of an unknown subscription is InvalidInput", () =>
        Effect.gen(function* () {
          const error = yield* Effect.flip(Subscription.resetTo(unique("st-none-"), "start"))
          assert.strictEqual(error._tag, "InvalidInput")
        }))

      it.scoped("reset is refused while a worker holds the lease; force fences it out and frees the lease", () =>
        Effect.gen(function* () {
          const category = unique("str")
          const subscriptionId = unique("st-reset-")
          const leases = yield* LeaseStore.LeaseStore
          const store = yield* SubscriptionStore.SubscriptionStore
          yield* appendEach(category, "a1", "a2")
          const lease = Option.getOrThrow(yield* leases.acquire(subscriptionId, "w1", Duration.seconds(60)))
          const fence = { workerId: "w1", fenceToken: lease.fenceToken }
          const sub = yield* Subscription.make({ subscriptionId, categories: [category] })
          yield* collectUntil(sub, (got) => got.length >= 2)
          assert.isTrue(yield* sub.checkpoint(fence))
          const before = (yield* sub.position).checkpoint

          const held = yield* Effect.flip(Subscription.resetTo(subscriptionId, "start"))
          assert.strictEqual(held._tag, "LeaseHeld")
          assert.deepStrictEqual(Option.getOrThrow(yield* store.readCheckpoint(subscriptionId)), before, "a refused reset writes nothing")

          const reset = yield* Subscription.resetTo(subscriptionId, "start", { force: true })
          assert.strictEqual(reset.fenceToken, lease.fenceToken + 1n)
          assert.strictEqual(Option.getOrThrow(reset.displaced).workerId, "w1")
          // The holder's fenced writes are refused: the reset checkpoint stays.
          assert.isFalse(yield* sub.checkpoint(fence))
          const lost = yield* Effect.flip(leases.commitFenced(subscriptionId, fence, before, Effect.void))
          assert.strictEqual(lost._tag, "LeaseLost")
          assert.isFalse(yield* leases.renew(subscriptionId, fence, Duration.seconds(60)))
          assert.isTrue(Cursor.isZero(Option.getOrThrow(yield* store.readCheckpoint(subscriptionId)).cursor))
          // The lease is free at once: the next leader replays from the start.
          const next = Option.getOrThrow(yield* leases.acquire(subscriptionId, "w2", Duration.seconds(60)))
          assert.strictEqual(next.fenceToken, lease.fenceToken + 2n)
          const replay = yield* Subscription.make({ subscriptionId, categories: [category] })
          assert.deepStrictEqual(marks(yield* collectUntil(replay, (got) => got.length >= 2)), ["a1", "a2"])
        }))

      it.scoped("a reset of an expired lease needs no force and still fences out its holder", () =>
        Effect.gen(function* () {
          const category = unique("stx")
          const subscriptionId = unique("st-exp-")
          const leases = yield* LeaseStore.LeaseStore
          yield* appendEach(category, "a1")
          const lease = Option.getOrThrow(yield* leases.acquire(subscriptionId, "w1", Duration.millis(1)))
          const fence = { workerId: "w1", fenceToken: lease.fenceToken }
          yield* waitUntil(
            Effect.map(leases.acquire(subscriptionId, "probe", Duration.zero), Option.isSome),
            "the lease to expire"
          )
          const reset = yield* Subscription.resetTo(subscriptionId, "head")
          assert.isTrue(Option.isNone(reset.displaced))
          const sub = yield* Subscription.make({ subscriptionId, categories: [category] })
          assert.isFalse(yield* sub.checkpoint(fence))
          assert.isFalse(yield* sub.checkpoint({ workerId: "probe", fenceToken: reset.fenceToken - 1n }))
        }))

      it.scoped("a reset to a position inside an inverted pair delivers every stream in order, also after a restart", () =>
        Effect.gen(function* () {
          const category = unique("stj")
          const [s, b] = [`${category}-s`, `${category}-b`]
          const subscriptionId = unique("st-rinv-")
          const { s4 } = yield* invertedLog(category, s, b)
          // The subscription read everything and checkpointed at the end.
          const first = yield* Subscription.make({ subscriptionId, categories: [category] })
          yield* collectUntil(first, (g) => versionsOf(g, s).length >= 5 && versionsOf(g, b).length >= 2)
          assert.isTrue(yield* first.checkpoint())
          const reset = yield* Subscription.resetTo(subscriptionId, { position: s4.globalPosition })
          assert.isTrue(Cursor.order(reset.checkpoint.cursor, Cursor.of(s4)) < 0)
          for (const round of [1, 2]) {
            const sub = yield* Subscription.make({ subscriptionId, categories: [category] })
            const got = yield* collectUntil(sub, (g) => versionsOf(g, s).length >= 2 && versionsOf(g, b).length >= 2)
            assert.isTrue(perStreamOrdered(got), `round ${round}`)
            assert.deepStrictEqual(versionsOf(got, s), [4, 5], `round ${round}`)
            assert.deepStrictEqual(versionsOf(got, b), [1, 2], `round ${round}`)
          }
        }))

      it.scoped("a projection with startFrom head handles only what is committed after its first start", () =>
        Effect.gen(function* () {
          const category = unique("stproj")
          const subscriptionId = unique("st-proj-")
          yield* appendEach(category, "a1", "a2")
          const handled = yield* Ref.make<ReadonlyArray<unknown>>([])
          const projection = Projection.atLeastOnce({
            subscriptionId,
            categories: [category],
            startFrom: "head",
            handle: ({ recorded }) => Ref.update(handled, (h) => [...h, recorded.data["mark"]])
          })
          const runner = yield* ProjectionRunner.run([projection], {
            workerId: unique("w-"),
            leaseRecheckInterval: "50 millis",
            pollInterval: "50 millis"
          })
          const store = yield* SubscriptionStore.SubscriptionStore
          yield* waitUntil(Effect.map(store.readCheckpoint(subscriptionId), Option.isSome), "the projection's first start")
          yield* appendEach(category, "b1")
          yield* waitUntil(Effect.map(Ref.get(handled), (h) => h.length >= 1), "b1 handled")
          yield* runner.whenCaughtUp(subscriptionId)
          assert.deepStrictEqual(yield* Ref.get(handled), ["b1"])
        }))
    })
  })
