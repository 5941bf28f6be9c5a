/**
 * What a stream read leaves behind once it is done (`internal/release.ts`):
 * `readStream` ends with an empty chunk, so a stream's run does not keep its
 * last page in its executor, and `readStreamEvents`' span ends with the
 * number of events, never the events (a span keeps the exit it ends with).
 * Either kept page outlives its read in the old generation.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as EventStore from "../src/EventStore.js"
import * as ExpectedVersion from "../src/ExpectedVersion.js"
import * as InMemory from "../src/InMemory.js"
import { unique } from "@mire/core/conformance"
import { memoryRaw } from "./memoryRaw.js"
import { assertEndedWithCount, traced } from "../../../test/spans.js"

const store = memoryRaw.pipe(Layer.provideMerge(InMemory.layer))

const stream = (n: number) =>
  Effect.gen(function* () {
    const category = unique("release")
    const ev = { eventType: `${category}.e`, schemaVersion: 1, data: { n: 1 } }
    const streamId = `${category}-1`
    yield* EventStore.append(streamId, category, ExpectedVersion.NoStream, Array.from({ length: n }, () => ev))
    return streamId
  })

describe("stream reads let go of their pages", () => {
  it.effect("readStream emits one chunk per page, then an empty chunk", () =>
    Effect.gen(function* () {
      const streamId = yield* stream(5)
      const sizes = (options?: EventStore.ReadStreamOptions) =>
        Effect.map(Stream.runCollect(Stream.chunks(EventStore.readStream(streamId, options))), (chunks) =>
          Chunk.toReadonlyArray(chunks).map(Chunk.size)
        )
      assert.deepStrictEqual(yield* sizes(), [5, 0])
      assert.deepStrictEqual(yield* sizes({ pageSize: 2 }), [2, 2, 1, 0])
      assert.deepStrictEqual(yield* sizes({ direction: "backward", pageSize: 3 }), [3, 2, 0])
      assert.deepStrictEqual(yield* sizes({ from: 9 }), [0, 0])
      assert.deepStrictEqual(
        Chunk.toReadonlyArray(yield* Stream.runCollect(Stream.chunks(EventStore.readCategory(streamId.split("-")[0]!)))).map(
          Chunk.size
        ),
        [5, 0]
      )
    }).pipe(Effect.provide(store)))

  it.effect("readStreamEvents' span is the caller's child, carries the stream and ends with the count of events", () =>
    Effect.gen(function* () {
      const streamId = yield* stream(3)
      const { spans, value } = yield* traced(
        Effect.withSpan(Effect.zip(EventStore.readStreamEvents(streamId), EventStore.readStreamEvents(streamId, { limit: 2 })), "caller")
      )
      assert.deepStrictEqual(
        value.map((events) => events.length),
        [3, 2]
      )
      const reads = spans.filter((s) => s.name === "EventStore.readStreamEvents")
      assert.strictEqual(reads.length, 2)
      for (const [span, count] of reads.map((s, i) => [s, i === 0 ? 3 : 2] as const)) {
        assert.strictEqual(span.attributes.get("mire.stream_id"), streamId)
        assert.strictEqual(span.attributes.get("mire.event_count"), count)
        assertEndedWithCount(span, "caller", count)
      }
      const failed = yield* traced(Effect.flip(EventStore.readStreamEvents("not valid")))
      assert.strictEqual(failed.value._tag, "InvalidInput")
      const span = failed.spans.find((s) => s.name === "EventStore.readStreamEvents")
      assert.isTrue(span !== undefined && span.status._tag === "Ended" && Exit.isFailure(span.status.exit))
    }).pipe(Effect.provide(store)))
})
