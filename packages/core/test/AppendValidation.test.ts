/**
 * An append's validation on its hot path (issue 12): an event type already
 * found valid in a request is not checked again, and only the caller's own
 * event ids are checked for repeats. These pin that every event is still
 * checked and every problem still names its event and field.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as EventStore from "../src/EventStore.js"
import * as ExpectedVersion from "../src/ExpectedVersion.js"
import type { NewEvent } from "../src/RecordedEvent.js"

const event = (eventType: string, data: { readonly [key: string]: unknown } = {}): NewEvent => ({ eventType, schemaVersion: 1, data })

const problem = (streamId: string, events: ReadonlyArray<NewEvent>) =>
  Effect.map(Effect.flip(EventStore.append(streamId, "validation", ExpectedVersion.NoStream, events)), (error) =>
    error._tag === "InvalidInput" ? { field: error.field, reason: error.reason } : { field: error._tag, reason: "" }
  )

describe("append validation", () => {
  it.effect("an event type is checked for every event, also after events of a valid type", () =>
    Effect.gen(function* () {
      const cases: ReadonlyArray<readonly [string, string]> = [
        ["", "must be 1-255 characters"],
        ["x".repeat(256), "must be 1-255 characters"],
        ["$system", "types starting with $ are reserved for mire's system events"],
        ["a\u0000b", "contains NUL"],
        ["lone\ud800", "lone surrogate"]
      ]
      for (const [i, [eventType, reason]] of cases.entries()) {
        const found = yield* problem(`validation-type${i}`, [event("Ok"), event("Ok"), event(eventType), event("Ok")])
        assert.strictEqual(found.field, "events[2].eventType")
        assert.include(found.reason, reason)
        // The same type valid first, then another: each is checked.
        const second = yield* problem(`validation-typeb${i}`, [event("Ok"), event("Other"), event("Ok"), event(eventType)])
        assert.strictEqual(second.field, "events[3].eventType")
      }
      assert.strictEqual(yield* EventStore.streamVersion("validation-type0"), 0)
    }).pipe(Effect.provide(EventStore.layerMemory)))

  it.effect("every problem names its event and field", () =>
    Effect.gen(function* () {
      const version = yield* problem("validation-f1", [event("Ok"), { eventType: "Ok", schemaVersion: 0, data: {} }])
      assert.strictEqual(version.field, "events[1].schemaVersion")
      const path = yield* problem("validation-f2", [event("Ok"), event("Ok"), event("Ok", { a: { b: [1, Number.NaN] } })])
      assert.strictEqual(path.field, "events[2].data.a.b[1]")
      const metadata = yield* problem("validation-f3", [event("Ok"), { ...event("Ok"), metadata: JSON.parse('{"other": 1}') }])
      assert.strictEqual(metadata.field, "events[1].metadata.other")
      const id = yield* problem("validation-f4", [event("Ok"), { ...event("Ok"), eventId: "not-a-uuid" }])
      assert.strictEqual(id.field, "events[1].eventId")
    }).pipe(Effect.provide(EventStore.layerMemory)))

  it.effect("generated ids are unique in a large batch; a caller's id given twice is still refused", () =>
    Effect.gen(function* () {
      yield* EventStore.append("validation-ids", "validation", ExpectedVersion.NoStream, Array.from({ length: 5000 }, () => event("Ok")))
      const stored = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readStream("validation-ids")))
      assert.strictEqual(stored.length, 5000)
      assert.strictEqual(new Set(stored.map((e) => e.eventId)).size, 5000)
      const given = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
      const twice = yield* problem("validation-given", [event("Ok"), { ...event("Ok"), eventId: given }, event("Ok"), { ...event("Ok"), eventId: given.toUpperCase() }])
      assert.deepStrictEqual(twice, { field: "events[3].eventId", reason: `event id ${given} appears twice in this append` })
    }).pipe(Effect.provide(EventStore.layerMemory)))
})
