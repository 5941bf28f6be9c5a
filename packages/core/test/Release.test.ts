/**
 * A consumer's release of a batch it is done with (`internal/release.ts`):
 * the array is emptied, the events in it are not touched.
 */
import { assert, describe, it } from "@effect/vitest"
import { releaseEvents } from "../src/internal/release.js"

describe("releaseEvents", () => {
  it("empties the batch's array and leaves its events whole", () => {
    const first = { streamVersion: 1, data: { n: 1 } }
    const second = { streamVersion: 2, data: { n: 2 } }
    const events: ReadonlyArray<typeof first> = [first, second]
    const kept = events[1]
    releaseEvents(events)
    assert.strictEqual(events.length, 0)
    assert.deepStrictEqual(kept, { streamVersion: 2, data: { n: 2 } })
    assert.deepStrictEqual(first, { streamVersion: 1, data: { n: 1 } })
  })
})
