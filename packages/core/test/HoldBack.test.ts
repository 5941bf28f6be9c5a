/**
 * HoldBack as a pure decision: bounded state (issue 11, item 9), and what a
 * forgotten stream needs when it appears again.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cursor from "../src/Cursor.js"
import * as HoldBack from "../src/HoldBack.js"
import type { RecordedEvent } from "../src/RecordedEvent.js"

const at = new Date(0)
let position = 0n
const event = (streamId: string, streamVersion: number, transactionId?: bigint): RecordedEvent => {
  position++
  return {
    eventId: `e${position}`,
    streamId,
    category: "c",
    streamVersion,
    globalPosition: position,
    transactionId: transactionId ?? position,
    eventType: "e",
    schemaVersion: 1,
    data: {},
    metadata: {},
    recordedAt: at
  }
}

const run = (state: HoldBack.State, page: ReadonlyArray<RecordedEvent>, baseline = new Map<string, number>()) => {
  const result = HoldBack.step(state, page, baseline, "sub")
  if ("_tag" in result) return assert.fail(result.message)
  return result
}

describe("HoldBack", () => {
  it("after 100k distinct single-event streams all behind the cursor, the state holds O(retain + held) entries", () => {
    let state = HoldBack.make({ retain: 100 })
    let read = Cursor.start
    let delivered = 0
    for (let page = 0; page < 1000; page++) {
      const events = Array.from({ length: 100 }, (_, i) => event(`wide-${page}-${i}`, 1))
      const unknown = HoldBack.unknownStreams(state, events, true)
      assert.deepStrictEqual(unknown, [], "a version 1 read from the start needs no lookup")
      const result = run(state, events)
      state = result.state
      delivered += result.deliver.length
      read = Cursor.of(events[events.length - 1]!)
      const checkpoint = HoldBack.checkpoint(state, read)
      assert.deepStrictEqual(checkpoint.cursor, read)
      assert.strictEqual(checkpoint.delivered.size, 0)
    }
    assert.strictEqual(delivered, 100_000)
    assert.strictEqual(HoldBack.heldCount(state), 0)
    assert.isAtMost(HoldBack.rememberedCount(state), 100)
    assert.isAtMost(state.storage.lastSeen.size, 100)
    assert.isAtMost(state.storage.recent.items.length - state.storage.recent.head, 100)
    assert.isAtMost(state.storage.retained.items.length - state.storage.retained.head, 2048)
  })

  it("a held stream keeps what it needs; once released, the state shrinks back", () => {
    let state = HoldBack.make({ retain: 0 })
    const [v2, v1] = [event("x", 2, 1n), event("x", 1, 1_000_000n)]
    state = run(state, [v2]).state
    assert.strictEqual(HoldBack.heldCount(state), 1)
    for (let page = 0; page < 50; page++) {
      state = run(state, Array.from({ length: 100 }, (_, i) => event(`flow-${page}-${i}`, 1))).state
    }
    // Everything delivered after the held v2 is past the safe cursor: the checkpoint must record it.
    const held = HoldBack.checkpoint(state, Cursor.of(event("probe", 1)))
    assert.deepStrictEqual(held.cursor, Cursor.before(Cursor.of(v2)))
    assert.strictEqual(held.delivered.size, 5000)
    assert.deepStrictEqual(HoldBack.waiting(state), [{ streamId: "x", missing: 1, seen: 2 }])
    const released = run(state, [v1])
    assert.deepStrictEqual(released.deliver.map((e) => e.streamVersion), [1, 2])
    state = released.state
    assert.strictEqual(HoldBack.heldCount(state), 0)
    assert.strictEqual(HoldBack.rememberedCount(state), 0)
    assert.strictEqual(HoldBack.checkpoint(state, Cursor.of(v1)).delivered.size, 0)
  })

  it("a forgotten stream appears again: it is unknown, and its looked-up baseline makes it flow", () => {
    let state = HoldBack.make({ retain: 0 })
    state = run(state, [event("s", 1), event("t", 1)]).state
    assert.strictEqual(HoldBack.rememberedCount(state), 0)
    const next = [event("s", 2)]
    assert.deepStrictEqual(HoldBack.unknownStreams(state, next, true), ["s"])
    const result = run(state, next, new Map([["s", 1]]))
    assert.deepStrictEqual(result.deliver.map((e) => e.streamVersion), [2])
    // A wrong (too high) baseline is the backstop's business.
    const violation = HoldBack.step(result.state, [event("t", 1)], new Map([["t", 1]]), "sub")
    assert.strictEqual("_tag" in violation ? violation._tag : "delivered", "OrderingViolation")
  })

  it("plan decides without changing the state; a violation leaves it intact", () => {
    let state = HoldBack.make()
    state = run(state, [event("a", 1), event("a", 2)]).state
    const before = HoldBack.checkpoint(state, Cursor.start)
    const decided = HoldBack.plan(state, [event("a", 4), event("b", 1)], new Map(), "sub")
    assert.isFalse("_tag" in decided)
    if (!("_tag" in decided)) {
      assert.deepStrictEqual(HoldBack.waitingIn(decided), [{ streamId: "a", missing: 3, seen: 4 }])
      assert.strictEqual(HoldBack.heldCount(state), 0, "not applied")
    }
    const bad = HoldBack.plan(state, [event("b", 1), event("a", 2)], new Map(), "sub")
    assert.strictEqual("_tag" in bad ? bad._tag : "planned", "OrderingViolation")
    assert.deepStrictEqual(HoldBack.checkpoint(state, Cursor.start), before)
    assert.strictEqual(state.storage.delivered.get("b"), undefined)
  })
})
