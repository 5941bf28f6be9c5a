import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as EventStore from "../src/EventStore.js"
import * as ExpectedVersion from "../src/ExpectedVersion.js"
import { v7 } from "../src/internal/uuid.js"

const v7Pattern = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
const millisOf = (id: string) => Number.parseInt(id.replace(/-/g, "").slice(0, 12), 16)

describe("UUID v7 event ids", () => {
  it("carry the time in their first 48 bits, the version and variant bits, and random bits", () => {
    const t = Date.UTC(2026, 11, 1, 10, 30, 15, 123)
    const ids = Array.from({ length: 20_000 }, () => v7(t))
    for (const id of ids) {
      assert.match(id, v7Pattern)
      assert.strictEqual(millisOf(id), t)
    }
    assert.strictEqual(new Set(ids).size, ids.length)
    assert.strictEqual(millisOf(v7(0)), 0)
    assert.strictEqual(millisOf(v7(2 ** 48 - 1)), 2 ** 48 - 1)
  })

  it("sort by time: a later millisecond sorts after an earlier one", () => {
    const earlier = v7(1_700_000_000_000)
    const later = v7(1_700_000_000_001)
    assert.isTrue(earlier < later)
  })

  it.effect("an append without event ids gets v7 ids from the Clock", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(Date.UTC(2026, 0, 2))
      yield* EventStore.append("uuid-1", "uuid", ExpectedVersion.NoStream, [
        { eventType: "e", schemaVersion: 1, data: {} },
        { eventType: "e", schemaVersion: 1, data: {} }
      ])
      const events = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readStream("uuid-1")))
      assert.strictEqual(events.length, 2)
      for (const event of events) {
        assert.match(event.eventId, v7Pattern)
        assert.strictEqual(millisOf(event.eventId), Date.UTC(2026, 0, 2))
      }
    }).pipe(Effect.provide(EventStore.layerMemory))
  )
})
