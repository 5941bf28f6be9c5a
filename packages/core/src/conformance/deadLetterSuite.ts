/**
 * Dead letters (`onFailure: "skip"`), run against every store: the store's
 * primitives (idempotent recording, what is due, retry, discard, the fence)
 * and the runner over them (a poison event is set aside with its attempts,
 * its stream parked behind it in order, every other stream goes on; retry
 * redelivers in order; discard releases the parked events; transactional
 * batches isolate the poison event exactly once; undecodable events count).
 *
 * @since 0.2.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as AggregateRoot from "../AggregateRoot.js"
import * as DeadLetters from "../DeadLetters.js"
import * as EventStore from "../EventStore.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import type * as Lease from "../Lease.js"
import * as LeaseStore from "../LeaseStore.js"
import * as Metrics from "../Metrics.js"
import * as Projection from "../Projection.js"
import * as ProjectionRunner from "../ProjectionRunner.js"
import type { NewEvent, RecordedEvent } from "../RecordedEvent.js"
import * as SubscriptionStore from "../SubscriptionStore.js"
import { account, Deposited, Opened, Raw, TxReadModel, unique } from "./fixtures.js"
import { waitUntil } from "./scopes.js"

type Env =
  | EventStore.EventStore
  | SubscriptionStore.SubscriptionStore
  | LeaseStore.LeaseStore
  | DeadLetters.DeadLetterStore
  | TxReadModel
  | Raw

const ev = (mark: string): NewEvent => ({ eventType: "dl.marked", schemaVersion: 1, data: { mark } })

/** Appends `marks` to `streamId` after version `after` (0: a new stream). */
const appendMarks = (streamId: string, category: string, after: number, marks: ReadonlyArray<string>) =>
  EventStore.append(streamId, category, after === 0 ? ExpectedVersion.NoStream : ExpectedVersion.Exact(after), marks.map(ev))

const readAll = (category: string) => Effect.map(Stream.runCollect(EventStore.readCategory(category)), Chunk.toReadonlyArray)

const fast = {
  pollInterval: "20 millis",
  batchSize: 10,
  leaseTtl: "2 seconds",
  leaseRecheckInterval: "100 millis",
  retry: Schedule.spaced("1 millis"),
  maxAttempts: 3
} as const

const letter = (at: RecordedEvent, status: "failed" | "parked", error = "boom"): DeadLetters.NewDeadLetter =>
  status === "failed" ? DeadLetters.failed(at, error, 3) : DeadLetters.parked(at)

const byStream = (handled: ReadonlyArray<string>, streamId: string): ReadonlyArray<number> =>
  handled.filter((h) => h.startsWith(`${streamId}@`)).map((h) => Number(h.slice(streamId.length + 1)))

const listOf = (subscriptionId: string) => Effect.orDie(DeadLetters.list(Option.some(subscriptionId)))

const counter = (subscriptionId: string, status: "failed" | "parked") =>
  Effect.map(
    Metric.value(Metric.tagged(Metric.tagged(Metrics.deadLetters, "subscription", subscriptionId), "status", status)),
    (state) => state.count
  )

/** A handler that records `stream@version` and fails on the marks in `broken`. */
const recording = (handled: Array<string>, broken: Set<string>) => ({ recorded }: Projection.HandledEvent<RecordedEvent>) =>
  Effect.suspend(() => {
    const mark = String(recorded.data.mark)
    if (broken.has(mark)) return Effect.fail(`boom at ${mark}`)
    handled.push(`${recorded.streamId}@${recorded.streamVersion}`)
    return Effect.void
  })

/**
 * Registers the dead-letter suite.
 *
 * @since 0.2.0
 * @category suites
 */
export const deadLetterSuite = (name: string, storeLayer: Layer.Layer<Env>) =>
  describe(`dead letters: ${name}`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("the store: recording is idempotent, due is per stream in version order, retry and discard select", () =>
        Effect.gen(function* () {
          const store = yield* DeadLetters.DeadLetterStore
          const category = unique("dls")
          const sub = unique("sub-dls-")
          const a = yield* appendMarks(`${category}-a`, category, 0, ["a1", "a2", "a3"])
          const b = yield* appendMarks(`${category}-b`, category, 0, ["b1"])
          const events = yield* readAll(category)
          const at = (streamId: string, v: number) => events.find((e) => e.streamId === streamId && e.streamVersion === v)!
          assert.strictEqual(a.lastVersion, 3)
          assert.strictEqual(b.lastVersion, 1)
          const lease = Option.getOrThrow(yield* (yield* LeaseStore.LeaseStore).acquire(sub, "dls-w", Duration.seconds(30)))
          const fence: Lease.Fence = { workerId: "dls-w", fenceToken: lease.fenceToken }
          const letters = [
            letter(at(`${category}-a`, 1), "failed"),
            letter(at(`${category}-a`, 2), "parked"),
            letter(at(`${category}-a`, 3), "parked"),
            letter(at(`${category}-b`, 1), "failed")
          ]
          yield* store.fenced(sub, fence, store.record(sub, letters))
          // Again, with another error: the rows stay as they were.
          yield* store.fenced(sub, fence, store.record(sub, [letter(at(`${category}-a`, 1), "failed", "other")]))
          const listed = yield* listOf(sub)
          assert.deepStrictEqual(
            listed.map((l) => [l.streamId, l.streamVersion, l.status, l.attempts, l.error, l.eventType]),
            [
              [`${category}-a`, 1, "failed", 3, "boom", "dl.marked"],
              [`${category}-a`, 2, "parked", 0, `parked: ${category}-a has an earlier dead letter`, "dl.marked"],
              [`${category}-a`, 3, "parked", 0, `parked: ${category}-a has an earlier dead letter`, "dl.marked"],
              [`${category}-b`, 1, "failed", 3, "boom", "dl.marked"]
            ]
          )
          assert.deepStrictEqual([...(yield* store.parkedStreams(sub))].sort(), [`${category}-a`, `${category}-b`])
          assert.deepStrictEqual((yield* DeadLetters.counts).get(sub), { failed: 2, parked: 2, retry: 0 })
          // Nothing is due while each stream's oldest dead letter is failed.
          assert.deepStrictEqual(yield* store.due(sub, 100), [])
          // Retry by id marks only a failed one.
          const [a1, a2] = listed
          assert.strictEqual(yield* DeadLetters.retry({ _tag: "Ids", ids: [a1!.id, a2!.id] }), 1)
          const due = yield* store.due(sub, 100)
          assert.deepStrictEqual(
            due.map((d) => [d.letter.streamVersion, d.letter.status, Option.map(d.event, (e) => e.data.mark)]),
            [
              [1, "retry", Option.some("a1")],
              [2, "parked", Option.some("a2")],
              [3, "parked", Option.some("a3")]
            ]
          )
          assert.strictEqual((yield* store.due(sub, 2)).length, 2)
          // A failed redelivery: failed again, attempts added; nothing due.
          yield* store.fenced(sub, fence, store.failAgain(sub, a1!.id, { error: "again", attempts: 2 }))
          const again = (yield* listOf(sub))[0]!
          assert.strictEqual(again.status, "failed")
          assert.strictEqual(again.attempts, 5)
          assert.strictEqual(again.error, "again")
          assert.isAtLeast(again.lastFailedAt.getTime(), again.firstFailedAt.getTime())
          assert.deepStrictEqual(yield* store.due(sub, 100), [])
          // Discarding the failed one makes the parked ones behind it due.
          assert.strictEqual(yield* DeadLetters.discard({ _tag: "Ids", ids: [a1!.id] }), 1)
          assert.deepStrictEqual(
            (yield* store.due(sub, 100)).map((d) => d.letter.streamVersion),
            [2, 3]
          )
          // Resolving removes it.
          yield* store.fenced(sub, fence, store.resolve(sub, a2!.id))
          assert.strictEqual((yield* listOf(sub)).length, 2)
          // All of a subscription.
          assert.strictEqual(yield* DeadLetters.retry({ _tag: "All", subscriptionId: sub }), 1)
          assert.strictEqual(yield* DeadLetters.discard({ _tag: "All", subscriptionId: sub }), 2)
          assert.deepStrictEqual(yield* listOf(sub), [])
          assert.isFalse((yield* DeadLetters.counts).has(sub))
        }))

      it.effect("the store: a write under a fence that no longer holds rolls back with LeaseLost; bad input is InvalidInput", () =>
        Effect.gen(function* () {
          const store = yield* DeadLetters.DeadLetterStore
          const leases = yield* LeaseStore.LeaseStore
          const category = unique("dlf")
          const sub = unique("sub-dlf-")
          yield* appendMarks(`${category}-a`, category, 0, ["a1"])
          const [event] = yield* readAll(category)
          const first = Option.getOrThrow(yield* leases.acquire(sub, "dlf-a", Duration.seconds(30)))
          const stale: Lease.Fence = { workerId: "dlf-a", fenceToken: first.fenceToken }
          yield* leases.release(sub, stale)
          yield* leases.acquire(sub, "dlf-b", Duration.seconds(30))
          const refused = yield* Effect.flip(store.fenced(sub, stale, store.record(sub, [letter(event!, "failed")])))
          assert.strictEqual(refused._tag, "LeaseLost")
          assert.deepStrictEqual(yield* listOf(sub), [])
          const bad = yield* Effect.flip(DeadLetters.retry({ _tag: "Ids", ids: [0n] }))
          assert.strictEqual(bad._tag, "InvalidInput")
          const none = yield* Effect.flip(DeadLetters.discard({ _tag: "Ids", ids: [] }))
          assert.strictEqual(none._tag, "InvalidInput")
          const empty = yield* Effect.flip(DeadLetters.list(Option.some("")))
          assert.strictEqual(empty._tag, "InvalidInput")
        }))

      it.effect("at-least-once, skip: the poison event is set aside with its attempts, its stream parked, the rest goes on; retry redelivers in order", () =>
        Effect.gen(function* () {
          const category = unique("dla")
          const subscriptionId = unique("sub-dla-")
          const a = `${category}-a`
          const b = `${category}-b`
          const handled: Array<string> = []
          const broken = new Set(["a2"])
          const projection = Projection.atLeastOnce({
            subscriptionId,
            categories: [category],
            onFailure: "skip",
            handle: recording(handled, broken)
          })
          const failedBefore = yield* counter(subscriptionId, "failed")
          yield* appendMarks(a, category, 0, ["a1", "a2", "a3", "a4"])
          yield* appendMarks(b, category, 0, ["b1", "b2", "b3"])
          const runner = yield* ProjectionRunner.run([projection], { ...fast, workerId: "dla-w" })
          yield* runner.whenCaughtUp(subscriptionId, "60 seconds")
          assert.deepStrictEqual(byStream(handled, a), [1])
          assert.deepStrictEqual(byStream(handled, b), [1, 2, 3])
          const letters = yield* listOf(subscriptionId)
          assert.deepStrictEqual(
            letters.map((l) => [l.streamVersion, l.status, l.attempts]),
            [
              [2, "failed", 3],
              [3, "parked", 0],
              [4, "parked", 0]
            ]
          )
          assert.include(letters[0]!.error, "boom at a2")
          assert.strictEqual(letters[0]!.globalPosition > 0n, true)
          const [status] = yield* runner.status
          assert.strictEqual(status!.state, "leader")
          assert.deepStrictEqual(status!.deadLetters, { failed: 1, parked: 2, retry: 0 })
          assert.strictEqual((yield* counter(subscriptionId, "failed")) - failedBefore, 1)
          // A new event of the parked stream is parked too; other streams are handled.
          yield* appendMarks(a, category, 4, ["a5"])
          yield* appendMarks(b, category, 3, ["b4"])
          yield* runner.whenCaughtUp(subscriptionId, "60 seconds")
          assert.deepStrictEqual(byStream(handled, a), [1])
          assert.deepStrictEqual(byStream(handled, b), [1, 2, 3, 4])
          assert.strictEqual((yield* listOf(subscriptionId)).length, 4)
          // The handler is fixed; retry: the dead letter, then the parked events, in version order.
          broken.clear()
          assert.strictEqual(yield* DeadLetters.retry({ _tag: "All", subscriptionId }), 1)
          yield* waitUntil(Effect.map(listOf(subscriptionId), (l) => l.length === 0), "the dead letters to be redelivered")
          assert.deepStrictEqual(byStream(handled, a), [1, 2, 3, 4, 5])
          // The stream is no longer parked.
          yield* appendMarks(a, category, 5, ["a6"])
          yield* runner.whenCaughtUp(subscriptionId, "60 seconds")
          yield* waitUntil(Effect.sync(() => byStream(handled, a).length === 6), "a6 handled")
          assert.deepStrictEqual(byStream(handled, a), [1, 2, 3, 4, 5, 6])
          assert.deepStrictEqual((yield* runner.status)[0]!.deadLetters, DeadLetters.noCounts)
        }).pipe(Effect.scoped))

      it.effect("a retry that fails again records the attempts; discarding it releases the parked events, in order", () =>
        Effect.gen(function* () {
          const category = unique("dlr")
          const subscriptionId = unique("sub-dlr-")
          const a = `${category}-a`
          const handled: Array<string> = []
          const broken = new Set(["a2"])
          const projection = Projection.atLeastOnce({
            subscriptionId,
            categories: [category],
            onFailure: "skip",
            handle: recording(handled, broken)
          })
          yield* appendMarks(a, category, 0, ["a1", "a2", "a3", "a4"])
          const runner = yield* ProjectionRunner.run([projection], { ...fast, workerId: "dlr-w" })
          yield* runner.whenCaughtUp(subscriptionId, "60 seconds")
          const [poison] = yield* listOf(subscriptionId)
          assert.strictEqual(poison!.attempts, 3)
          assert.strictEqual(yield* DeadLetters.retry({ _tag: "Ids", ids: [poison!.id] }), 1)
          yield* waitUntil(
            Effect.map(listOf(subscriptionId), (l) => l[0]?.status === "failed" && l[0].attempts === 6),
            "the retry to fail again"
          )
          const after = yield* listOf(subscriptionId)
          assert.deepStrictEqual(
            after.map((l) => [l.streamVersion, l.status]),
            [
              [2, "failed"],
              [3, "parked"],
              [4, "parked"]
            ]
          )
          assert.deepStrictEqual(byStream(handled, a), [1])
          // Retry only marks failed ones: nothing else changes state.
          assert.strictEqual(yield* DeadLetters.discard({ _tag: "Ids", ids: [poison!.id] }), 1)
          yield* waitUntil(Effect.map(listOf(subscriptionId), (l) => l.length === 0), "the parked events to be redelivered")
          assert.deepStrictEqual(byStream(handled, a), [1, 3, 4])
        }).pipe(Effect.scoped))

      it.effect("stop (the default): the projection stops at the poison event and records no dead letter", () =>
        Effect.gen(function* () {
          const category = unique("dlstop")
          const subscriptionId = unique("sub-dlstop-")
          const handled: Array<string> = []
          const projection = Projection.atLeastOnce({
            subscriptionId,
            categories: [category],
            handle: recording(handled, new Set(["a2"]))
          })
          yield* appendMarks(`${category}-a`, category, 0, ["a1", "a2", "a3"])
          const runner = yield* ProjectionRunner.run([projection], { ...fast, workerId: "dlstop-w" })
          const failure = yield* Effect.flip(runner.whenCaughtUp(subscriptionId, "60 seconds"))
          assert.strictEqual(failure._tag, "ProjectionFailed")
          assert.deepStrictEqual(byStream(handled, `${category}-a`), [1])
          assert.deepStrictEqual(yield* listOf(subscriptionId), [])
        }).pipe(Effect.scoped))

      it.effect("transactional, skip: the poison event is isolated, the rest of the batch commits exactly once; retry completes it", () =>
        Effect.gen(function* () {
          const model = yield* TxReadModel
          const category = unique("dlt")
          const subscriptionId = unique("sub-dlt-")
          const a = `${category}-a`
          const b = `${category}-b`
          const broken = new Set(["a2"])
          const projection = Projection.transactional({
            subscriptionId,
            categories: [category],
            onFailure: "skip",
            // The row is written before the failure: a rolled-back attempt must leave none.
            handle: ({ recorded }) =>
              Effect.zipRight(
                model.insert(`${subscriptionId}:${recorded.streamId}@${recorded.streamVersion}`),
                Effect.suspend(() => (broken.has(String(recorded.data.mark)) ? Effect.fail("boom" as const) : Effect.void))
              )
          })
          yield* appendMarks(a, category, 0, ["a1", "a2", "a3"])
          yield* appendMarks(b, category, 0, ["b1", "b2"])
          const runner = yield* ProjectionRunner.run([projection], { ...fast, workerId: "dlt-w" })
          yield* runner.whenCaughtUp(subscriptionId, "60 seconds")
          const rows = (yield* model.rows(`${subscriptionId}:`)).map((r) => r.slice(subscriptionId.length + 1)).sort()
          assert.deepStrictEqual(rows, [`${a}@1`, `${b}@1`, `${b}@2`])
          assert.deepStrictEqual(
            (yield* listOf(subscriptionId)).map((l) => [l.streamVersion, l.status, l.attempts]),
            [
              [2, "failed", 3],
              [3, "parked", 0]
            ]
          )
          broken.clear()
          yield* DeadLetters.retry({ _tag: "All", subscriptionId })
          yield* waitUntil(Effect.map(listOf(subscriptionId), (l) => l.length === 0), "the dead letters to be redelivered")
          const all = (yield* model.rows(`${subscriptionId}:`)).map((r) => r.slice(subscriptionId.length + 1)).sort()
          assert.deepStrictEqual(all, [`${a}@1`, `${a}@2`, `${a}@3`, `${b}@1`, `${b}@2`])
        }).pipe(Effect.scoped))

      it.effect("an undecodable event is poison too: set aside with its decode error", () =>
        Effect.gen(function* () {
          const raw = yield* Raw
          const category = unique("dlu")
          const Account = account(category)
          const subscriptionId = unique("sub-dlu-")
          yield* EventStore.save(
            AggregateRoot.record(
              AggregateRoot.make(Account, "x"),
              Opened.make({ owner: "Ada" }),
              Deposited.make({ amount: 5 }),
              Deposited.make({ amount: 7 })
            )
          )
          yield* raw.setData(`${category}-x`, 2, { amount: "five" })
          const seen: Array<number> = []
          const projection = Projection.atLeastOnce({
            subscriptionId,
            aggregate: Account,
            onFailure: "skip",
            handle: ({ recorded }) => Effect.sync(() => void seen.push(recorded.streamVersion))
          })
          const runner = yield* ProjectionRunner.run([projection], { ...fast, workerId: "dlu-w" })
          yield* runner.whenCaughtUp(subscriptionId, "60 seconds")
          assert.deepStrictEqual(seen, [1])
          const letters = yield* listOf(subscriptionId)
          assert.deepStrictEqual(letters.map((l) => [l.streamVersion, l.status]), [
            [2, "failed"],
            [3, "parked"]
          ])
          assert.include(letters[0]!.error, "EventDecodeError")
          assert.strictEqual(letters[0]!.attempts, 3)
        }).pipe(Effect.scoped))

      it.effect("a projection that is not skip, led while dead letters exist, keeps their streams parked, redelivers retries, stops at a new failure", () =>
        Effect.gen(function* () {
          const category = unique("dlns")
          const subscriptionId = unique("sub-dlns-")
          const a = `${category}-a`
          const b = `${category}-b`
          const handled: Array<string> = []
          const broken = new Set(["a2"])
          const handle = recording(handled, broken)
          yield* appendMarks(a, category, 0, ["a1", "a2", "a3"])
          // A replica that skips sets a2 aside and parks a3, then goes away (its lease released).
          yield* Effect.scoped(
            Effect.gen(function* () {
              const skipping = Projection.atLeastOnce({ subscriptionId, categories: [category], onFailure: "skip", handle })
              const runner = yield* ProjectionRunner.run([skipping], { ...fast, workerId: "dlns-skip" })
              yield* runner.whenCaughtUp(subscriptionId, "60 seconds")
            })
          )
          assert.deepStrictEqual((yield* listOf(subscriptionId)).map((l) => [l.streamVersion, l.status]), [
            [2, "failed"],
            [3, "parked"]
          ])
          // A replica with the default (stop) takes over: a4 waits behind a2 and a3; other streams go on.
          yield* appendMarks(a, category, 3, ["a4"])
          yield* appendMarks(b, category, 0, ["b1"])
          const stopping = Projection.atLeastOnce({ subscriptionId, categories: [category], handle })
          const runner = yield* ProjectionRunner.run([stopping], { ...fast, workerId: "dlns-stop" })
          yield* runner.whenCaughtUp(subscriptionId, "60 seconds")
          assert.deepStrictEqual(byStream(handled, a), [1])
          assert.deepStrictEqual(byStream(handled, b), [1])
          assert.deepStrictEqual((yield* listOf(subscriptionId)).map((l) => [l.streamVersion, l.status]), [
            [2, "failed"],
            [3, "parked"],
            [4, "parked"]
          ])
          // It redelivers what an operator retries, in order; the stream is then no longer parked.
          broken.clear()
          assert.strictEqual(yield* DeadLetters.retry({ _tag: "All", subscriptionId }), 1)
          yield* waitUntil(Effect.map(listOf(subscriptionId), (l) => l.length === 0), "the dead letters to be redelivered")
          assert.deepStrictEqual(byStream(handled, a), [1, 2, 3, 4])
          yield* appendMarks(a, category, 4, ["a5"])
          yield* runner.whenCaughtUp(subscriptionId, "60 seconds")
          yield* waitUntil(Effect.sync(() => byStream(handled, a).length === 5), "a5 handled")
          assert.deepStrictEqual(byStream(handled, a), [1, 2, 3, 4, 5])
          // A new failure still stops it, and records nothing.
          broken.add("b2")
          yield* appendMarks(b, category, 1, ["b2"])
          const failure = yield* Effect.flip(runner.whenCaughtUp(subscriptionId, "60 seconds"))
          assert.strictEqual(failure._tag, "ProjectionFailed")
          assert.deepStrictEqual(yield* listOf(subscriptionId), [])
        }).pipe(Effect.scoped))

      it.effect("a due run stops at a failed dead letter: only an operator's retry redelivers it", () =>
        Effect.gen(function* () {
          const store = yield* DeadLetters.DeadLetterStore
          const leases = yield* LeaseStore.LeaseStore
          const category = unique("dlfr")
          const subscriptionId = unique("sub-dlfr-")
          const a = `${category}-a`
          yield* appendMarks(a, category, 0, ["a1", "a2", "a3"])
          const [a1, a2, a3] = yield* readAll(category)
          // What a replay after a crash between the flush and the checkpoint leaves: v1 parked, before the failed v2.
          const lease = Option.getOrThrow(yield* leases.acquire(subscriptionId, "dlfr-x", Duration.seconds(30)))
          const fence: Lease.Fence = { workerId: "dlfr-x", fenceToken: lease.fenceToken }
          yield* store.fenced(
            subscriptionId,
            fence,
            store.record(subscriptionId, [letter(a2!, "failed"), letter(a3!, "parked"), letter(a1!, "parked")])
          )
          yield* leases.release(subscriptionId, fence)
          // The handler would succeed now: only a retry may tell the runner to try v2 again.
          const handled: Array<string> = []
          const projection = Projection.atLeastOnce({
            subscriptionId,
            categories: [category],
            onFailure: "skip",
            handle: recording(handled, new Set())
          })
          const runner = yield* ProjectionRunner.run([projection], { ...fast, workerId: "dlfr-w" })
          yield* waitUntil(
            Effect.map(listOf(subscriptionId), (l) => l.every((x) => x.streamVersion !== 1)),
            "v1 to be redelivered"
          )
          // The redelivery that handled v1 has ended once a later batch is through (they take turns).
          yield* appendMarks(`${category}-b`, category, 0, ["b1"])
          yield* runner.whenCaughtUp(subscriptionId, "60 seconds")
          // v1 only (the replayed batch parks a1 again, so it may be handled twice: at least once), never v2 or v3.
          assert.deepStrictEqual([...new Set(byStream(handled, a))], [1])
          const left = (yield* listOf(subscriptionId)).filter((l) => l.streamVersion > 1)
          assert.deepStrictEqual(left.map((l) => [l.streamVersion, l.status, l.attempts]), [
            [2, "failed", 3],
            [3, "parked", 0]
          ])
          assert.strictEqual(yield* DeadLetters.retry({ _tag: "All", subscriptionId }), 1)
          yield* waitUntil(Effect.map(listOf(subscriptionId), (l) => l.length === 0), "the retried dead letters to be redelivered")
          assert.deepStrictEqual(byStream(handled, a).filter((v) => v > 1), [2, 3])
        }).pipe(Effect.scoped))

      it.effect("a redelivery whose event left the log keeps its dead letter, failed with EventGone, and the stream parked", () =>
        Effect.gen(function* () {
          const raw = yield* Raw
          const category = unique("dlg")
          const subscriptionId = unique("sub-dlg-")
          const a = `${category}-a`
          const handled: Array<string> = []
          const broken = new Set(["a2"])
          const projection = Projection.atLeastOnce({
            subscriptionId,
            categories: [category],
            onFailure: "skip",
            handle: recording(handled, broken)
          })
          yield* appendMarks(a, category, 0, ["a1", "a2", "a3"])
          const runner = yield* ProjectionRunner.run([projection], { ...fast, workerId: "dlg-w" })
          yield* runner.whenCaughtUp(subscriptionId, "60 seconds")
          const [poison] = yield* listOf(subscriptionId)
          assert.strictEqual(poison!.streamVersion, 2)
          // The event leaves the log (a truncation or deletion that did not know about the dead letter).
          yield* raw.deleteEvent(a, 2)
          broken.clear()
          const failedBefore = yield* counter(subscriptionId, "failed")
          assert.strictEqual(yield* DeadLetters.retry({ _tag: "All", subscriptionId }), 1)
          yield* waitUntil(
            Effect.map(listOf(subscriptionId), (l) => l[0]?.status === "failed" && l[0].error.startsWith("EventGone")),
            "the missing event to be reported"
          )
          const letters = yield* listOf(subscriptionId)
          assert.deepStrictEqual(letters.map((l) => [l.streamVersion, l.status, l.attempts]), [
            [2, "failed", 3],
            [3, "parked", 0]
          ])
          assert.include(letters[0]!.error, `${a} v2`)
          assert.strictEqual((yield* counter(subscriptionId, "failed")) - failedBefore, 1)
          assert.deepStrictEqual(byStream(handled, a), [1])
          // The operator decides: discarding it releases the events parked behind it.
          assert.strictEqual(yield* DeadLetters.discard({ _tag: "Ids", ids: [poison!.id] }), 1)
          yield* waitUntil(Effect.map(listOf(subscriptionId), (l) => l.length === 0), "the parked events to be redelivered")
          assert.deepStrictEqual(byStream(handled, a), [1, 3])
        }).pipe(Effect.scoped))

      it.effect("the leader reads the parked streams once per leadership, and no dead letters while none is parked", () =>
        Effect.gen(function* () {
          const store = yield* DeadLetters.DeadLetterStore
          const category = unique("dlq")
          const subscriptionId = unique("sub-dlq-")
          const calls = { parkedStreams: 0, due: 0 }
          const counting: DeadLetters.DeadLetterStore = {
            ...store,
            parkedStreams: (id) =>
              Effect.zipRight(
                Effect.sync(() => {
                  if (id === subscriptionId) calls.parkedStreams++
                }),
                store.parkedStreams(id)
              ),
            due: (id, limit) =>
              Effect.zipRight(
                Effect.sync(() => {
                  if (id === subscriptionId) calls.due++
                }),
                store.due(id, limit)
              )
          }
          const handled: Array<string> = []
          const broken = new Set<string>()
          const projection = Projection.atLeastOnce({
            subscriptionId,
            categories: [category],
            onFailure: "skip",
            handle: recording(handled, broken)
          })
          for (const s of ["a", "b", "c"]) {
            yield* appendMarks(`${category}-${s}`, category, 0, Array.from({ length: 12 }, (_, i) => `${s}${i + 1}`))
          }
          const runner = yield* ProjectionRunner.run([projection], { ...fast, workerId: "dlq-w" }).pipe(
            Effect.provideService(DeadLetters.DeadLetterStore, counting)
          )
          yield* runner.whenCaughtUp(subscriptionId, "60 seconds")
          assert.strictEqual(handled.length, 36)
          assert.deepStrictEqual(calls, { parkedStreams: 1, due: 0 })
          // A poison event parks its stream; more batches read the parked set no more.
          broken.add("a13")
          yield* appendMarks(`${category}-a`, category, 12, ["a13", "a14"])
          for (const s of ["b", "c"]) {
            yield* appendMarks(`${category}-${s}`, category, 12, Array.from({ length: 12 }, (_, i) => `${s}${i + 13}`))
          }
          yield* runner.whenCaughtUp(subscriptionId, "60 seconds")
          assert.strictEqual(handled.length, 60)
          assert.deepStrictEqual((yield* listOf(subscriptionId)).map((l) => [l.streamVersion, l.status]), [
            [13, "failed"],
            [14, "parked"]
          ])
          assert.strictEqual(calls.parkedStreams, 1)
        }).pipe(Effect.scoped))

      it.effect("a partitioned projection's shards: all of its id covers them; forgetting a shard deletes its dead letters", () =>
        Effect.gen(function* () {
          const store = yield* DeadLetters.DeadLetterStore
          const leases = yield* LeaseStore.LeaseStore
          const subscriptions = yield* SubscriptionStore.SubscriptionStore
          const category = unique("dlp")
          const p = unique("sub-dlp-")
          yield* appendMarks(`${category}-a`, category, 0, ["a1"])
          const [event] = yield* readAll(category)
          const ids = [p, `${p}#0of2`, `${p}#1of2`, `${p}#2of2`, `${p}x`]
          for (const id of ids) {
            const lease = Option.getOrThrow(yield* leases.acquire(id, "dlp-w", Duration.seconds(30)))
            const fence: Lease.Fence = { workerId: "dlp-w", fenceToken: lease.fenceToken }
            yield* store.fenced(id, fence, store.record(id, [letter(event!, "failed")]))
            yield* leases.release(id, fence)
          }
          const subs = (letters: ReadonlyArray<DeadLetters.DeadLetter>) => letters.map((l) => l.subscriptionId)
          assert.deepStrictEqual(subs(yield* listOf(p)), [p, `${p}#0of2`, `${p}#1of2`])
          assert.strictEqual(yield* DeadLetters.retry({ _tag: "All", subscriptionId: p }), 3)
          // A rebuild with another partition count forgets the old shards: their dead letters go with them.
          assert.deepStrictEqual(yield* subscriptions.forget([`${p}#0of2`]), [])
          assert.deepStrictEqual(subs(yield* listOf(p)), [p, `${p}#1of2`])
          assert.deepStrictEqual(subs(yield* listOf(`${p}#2of2`)), [`${p}#2of2`])
          assert.strictEqual(yield* DeadLetters.discard({ _tag: "All", subscriptionId: p }), 2)
          assert.deepStrictEqual(subs(yield* listOf(p)), [])
          // Not shards of it: `#2of2` (no such shard) and another id with the same prefix.
          assert.strictEqual(yield* DeadLetters.discard({ _tag: "All", subscriptionId: `${p}#2of2` }), 1)
          assert.strictEqual(yield* DeadLetters.discard({ _tag: "All", subscriptionId: `${p}x` }), 1)
        }))
    })
  })
