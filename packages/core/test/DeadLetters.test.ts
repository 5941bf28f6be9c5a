/**
 * Dead letters: the pure parts (ids and selections an operator types, the
 * error text kept, redelivery runs, counts), the runner's refusal of
 * `onFailure: "skip"` without a store, and the conformance suite on the
 * in-memory store.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { deadLetterSuite } from "@mire/core/conformance"
import * as DeadLetters from "../src/DeadLetters.js"
import * as EventStore from "../src/EventStore.js"
import { EventDecodeError } from "../src/EventStoreError.js"
import * as InMemory from "../src/InMemory.js"
import * as LeaseStore from "../src/LeaseStore.js"
import * as Projection from "../src/Projection.js"
import * as ProjectionRunner from "../src/ProjectionRunner.js"
import { aggregateIdOf, type RecordedEvent } from "../src/RecordedEvent.js"
import * as StreamId from "../src/StreamId.js"
import * as SubscriptionStore from "../src/SubscriptionStore.js"
import { memoryRaw, memoryReadModel } from "./memoryRaw.js"

const recorded = (streamId: string, streamVersion: number, globalPosition: bigint): RecordedEvent => ({
  eventId: "00000000-0000-4000-8000-000000000001",
  streamId: StreamId.fromStored(streamId),
  category: StreamId.categoryFromStored("pure"),
  aggregateId: aggregateIdOf(streamId, "pure"),
  streamVersion,
  globalPosition,
  transactionId: 3n,
  eventType: "pure.happened",
  schemaVersion: 1,
  data: {},
  metadata: {},
  recordedAt: new Date(0)
})

const due = (streamId: string, streamVersion: number, status: DeadLetters.Status): DeadLetters.Due => ({
  letter: {
    id: BigInt(streamVersion),
    subscriptionId: "s",
    globalPosition: BigInt(streamVersion),
    streamId,
    streamVersion,
    eventType: "t",
    error: "",
    attempts: 0,
    firstFailedAt: new Date(0),
    lastFailedAt: new Date(0),
    status
  },
  event: Option.none()
})

describe("DeadLetters (pure)", () => {
  it("parseId: positive int8 integers only", () => {
    assert.strictEqual(Either.getOrThrow(DeadLetters.parseId("1")), 1n)
    assert.strictEqual(Either.getOrThrow(DeadLetters.parseId("9223372036854775807")), 9223372036854775807n)
    for (const bad of ["0", "-1", "01", "1.5", "", " 1", "9223372036854775808", "abc", "1e3"]) {
      const parsed = DeadLetters.parseId(bad)
      assert.isTrue(Either.isLeft(parsed), bad)
      if (Either.isLeft(parsed)) assert.strictEqual(parsed.left._tag, "InvalidInput")
    }
  })

  it("selection: ids (deduplicated) or all of one subscription, exactly one of them", () => {
    assert.deepStrictEqual(Either.getOrThrow(DeadLetters.selection({ ids: ["2", "3", "2"] })), { _tag: "Ids", ids: [2n, 3n] })
    assert.deepStrictEqual(Either.getOrThrow(DeadLetters.selection({ ids: [], all: "balances" })), {
      _tag: "All",
      subscriptionId: "balances"
    })
    assert.isTrue(Either.isLeft(DeadLetters.selection({ ids: [] })))
    assert.isTrue(Either.isLeft(DeadLetters.selection({ ids: ["1"], all: "balances" })))
    assert.isTrue(Either.isLeft(DeadLetters.selection({ ids: [], all: "" })))
    assert.isTrue(Either.isLeft(DeadLetters.selection({ ids: ["1", "x"] })))
  })

  it("errorText: tag and message, a string as is, JSON otherwise, capped at 4000 characters", () => {
    assert.strictEqual(DeadLetters.errorText(new Error("boom")), "Error: boom")
    assert.strictEqual(DeadLetters.errorText(new TypeError("bad")), "TypeError: bad")
    assert.strictEqual(DeadLetters.errorText("plain"), "plain")
    assert.strictEqual(DeadLetters.errorText({ code: 7n }), '{"code":"7"}')
    const decode = new EventDecodeError({
      streamId: "s-1",
      streamVersion: 2,
      globalPosition: 9n,
      eventType: "T",
      schemaVersion: 1,
      issue: "amount: expected number"
    })
    assert.strictEqual(DeadLetters.errorText(decode), `EventDecodeError: ${decode.message}`)
    const long = DeadLetters.errorText("x".repeat(10_000))
    assert.strictEqual(long.length, 4000)
    assert.isTrue(long.endsWith("…"))
    const cyclic: { self?: unknown } = {}
    cyclic.self = cyclic
    assert.strictEqual(DeadLetters.errorText(cyclic), "[object Object]")
  })

  it("failed and parked: the dead letters of an event", () => {
    const event = recorded("pure-1", 4, 17n)
    assert.deepStrictEqual(DeadLetters.failed(event, "boom", 5), {
      globalPosition: 17n,
      streamId: "pure-1",
      streamVersion: 4,
      eventType: "pure.happened",
      error: "boom",
      attempts: 5,
      status: "failed"
    })
    const parked = DeadLetters.parked(event)
    assert.strictEqual(parked.status, "parked")
    assert.strictEqual(parked.attempts, 0)
  })

  it("redeliveries: one run per stream, each in version order", () => {
    const runs = DeadLetters.redeliveries([due("b", 2, "parked"), due("a", 3, "parked"), due("b", 1, "retry"), due("a", 1, "retry")])
    assert.deepStrictEqual(
      runs.map((run) => run.map((d) => `${d.letter.streamId}@${d.letter.streamVersion}`)),
      [
        ["b@1", "b@2"],
        ["a@1", "a@3"]
      ]
    )
    assert.deepStrictEqual(DeadLetters.redeliveries([]), [])
  })

  it("redeliveries: a run ends before its first failed letter (only an operator's retry redelivers it)", () => {
    const runs = DeadLetters.redeliveries([
      due("a", 2, "failed"),
      due("a", 1, "parked"),
      due("a", 3, "parked"),
      due("b", 1, "failed"),
      due("c", 1, "retry")
    ])
    assert.deepStrictEqual(
      runs.map((run) => run.map((d) => `${d.letter.streamId}@${d.letter.streamVersion}`)),
      [["a@1"], ["c@1"]]
    )
  })

  it("settled: the streams a page holds whole, none of their letters failed", () => {
    const page = [due("a", 1, "retry"), due("a", 2, "parked"), due("b", 1, "parked"), due("b", 2, "failed"), due("c", 1, "parked")]
    // A full page: its last stream may have more letters.
    assert.deepStrictEqual([...DeadLetters.settled(page, 5)], ["a"])
    assert.deepStrictEqual([...DeadLetters.settled(page, 6)], ["a", "c"])
    assert.deepStrictEqual([...DeadLetters.settled([], 5)], [])
  })

  it("covers: a subscription, or a shard of the partitioned projection of that id", () => {
    assert.isTrue(DeadLetters.covers("totals", "totals"))
    assert.isTrue(DeadLetters.covers("totals", "totals#0of4"))
    assert.isTrue(DeadLetters.covers("totals", "totals#3of4"))
    assert.isFalse(DeadLetters.covers("totals", "totals#4of4"))
    assert.isFalse(DeadLetters.covers("totals", "totals#0of1"))
    assert.isFalse(DeadLetters.covers("totals", "totals#01of4"))
    assert.isFalse(DeadLetters.covers("totals", "totalsx"))
    assert.isFalse(DeadLetters.covers("totals", "total"))
    assert.isFalse(DeadLetters.covers("totals#0of4", "totals"))
  })

  it("eventGone: names the event and what to do", () => {
    const text = DeadLetters.eventGone({ streamId: "acct-1", streamVersion: 2, globalPosition: 17n })
    assert.isTrue(text.startsWith("EventGone: acct-1 v2 (position 17)"))
    assert.include(text, "discard")
  })

  it("countsOf: per subscription and status", () => {
    const counts = DeadLetters.countsOf([
      { subscriptionId: "x", status: "failed" },
      { subscriptionId: "x", status: "parked" },
      { subscriptionId: "x", status: "parked" },
      { subscriptionId: "y", status: "retry" }
    ])
    assert.deepStrictEqual(counts.get("x"), { failed: 1, parked: 2, retry: 0 })
    assert.deepStrictEqual(counts.get("y"), { failed: 0, parked: 0, retry: 1 })
  })
})

describe("ProjectionRunner onFailure", () => {
  const withoutDeadLetters = Layer.mergeAll(SubscriptionStore.layerMemory, LeaseStore.layerMemory).pipe(
    Layer.provideMerge(EventStore.layerMemory)
  )

  it.scoped("skip without a DeadLetterStore is refused before anything runs", () =>
    Effect.gen(function* () {
      const projection = Projection.atLeastOnce({ subscriptionId: "dl-none", onFailure: "skip", handle: () => Effect.void })
      const error = yield* Effect.flip(ProjectionRunner.run([projection], { workerId: "w" }))
      assert.strictEqual(error._tag, "InvalidInput")
      if (error._tag === "InvalidInput") assert.strictEqual(error.field, "onFailure")
      // stop needs none.
      const stop = Projection.atLeastOnce({ subscriptionId: "dl-stop", onFailure: "stop", handle: () => Effect.void })
      yield* ProjectionRunner.run([stop], { workerId: "w" })
    }).pipe(Effect.provide(withoutDeadLetters)))
})

deadLetterSuite("in-memory", Layer.mergeAll(memoryReadModel, memoryRaw).pipe(Layer.provideMerge(InMemory.layer)))
