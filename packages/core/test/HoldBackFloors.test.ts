/**
 * HoldBack floors as a pure decision: a stream whose first versions were
 * removed by design (deleted or truncated) moves past them, held events of
 * removed versions are dropped, and nothing stalls.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cursor from "../src/Cursor.js"
import * as HoldBack from "../src/HoldBack.js"
import type { RecordedEvent } from "../src/RecordedEvent.js"
import { event } from "./holdBackFixtures.js"

const planned = (
  state: HoldBack.State,
  page: ReadonlyArray<RecordedEvent>,
  floors: ReadonlyMap<string, number>,
  baseline: ReadonlyMap<string, number> = new Map()
): HoldBack.Plan => {
  const decided = HoldBack.plan(state, page, baseline, "sub", floors)
  if ("_tag" in decided) return assert.fail(decided.message)
  return decided
}

const versions = (events: ReadonlyArray<RecordedEvent>) => events.map((e) => `${e.streamId}@${e.streamVersion}`)

describe("HoldBack floors", () => {
  it("a stream first seen at its floor (a deleted stream's tombstone) is delivered at once", () => {
    const state = HoldBack.make()
    const tombstone = event("s", 6)
    const without = planned(state, [tombstone], new Map())
    assert.deepStrictEqual(versions(without.deliver), [], "without its floor it is held for v1")
    assert.deepStrictEqual(HoldBack.waitingIn(without), [{ streamId: "s", missing: 1, seen: 6 }])
    const decided = planned(state, [tombstone], new Map([["s", 6]]))
    assert.deepStrictEqual(versions(decided.deliver), ["s@6"])
    const next = HoldBack.commit(state, decided)
    assert.strictEqual(HoldBack.heldCount(next), 0)
    assert.strictEqual(next.storage.delivered.get("s"), 6)
  })

  it("held events below the floor are dropped, and those the floor makes consecutive are released", () => {
    // s v1 delivered; v3 and v4 held for v2; then s is truncated before 4 (or deleted, tombstone at 4).
    let state = HoldBack.make()
    const first = planned(state, [event("s", 1), event("s", 3), event("s", 4)], new Map())
    assert.deepStrictEqual(versions(first.deliver), ["s@1"])
    state = HoldBack.commit(state, first)
    assert.strictEqual(HoldBack.heldCount(state), 2)
    const read = first.read
    // Nothing new in the page: the floor alone releases v4 and drops v3.
    const decided = planned(state, [], new Map([["s", 4]]))
    assert.deepStrictEqual(versions(decided.deliver), ["s@4"])
    state = HoldBack.commit(state, decided)
    assert.strictEqual(HoldBack.heldCount(state), 0)
    assert.deepStrictEqual(HoldBack.waiting(state), [])
    // The checkpoint is no longer held back by v3.
    assert.deepStrictEqual(HoldBack.safeCursor(state, read), read)
    assert.strictEqual(HoldBack.checkpoint(state, read).cursor, read)
  })

  it("a page's events below the floor (read before the removal) are dropped, never an OrderingViolation", () => {
    const state = HoldBack.make()
    const page = [event("s", 1), event("s", 2), event("t", 1), event("s", 5)]
    const decided = planned(state, page, new Map([["s", 5]]))
    assert.deepStrictEqual(versions(decided.deliver), ["t@1", "s@5"])
    const next = HoldBack.commit(state, decided)
    assert.strictEqual(next.storage.delivered.get("s"), 5)
  })

  it("a floor at or below the delivered version changes nothing", () => {
    let state = HoldBack.make()
    const first = planned(state, [event("s", 1), event("s", 2), event("s", 3)], new Map())
    state = HoldBack.commit(state, first)
    const decided = planned(state, [event("s", 4)], new Map([["s", 2]]))
    assert.deepStrictEqual(versions(decided.deliver), ["s@4"])
  })

  it("other streams keep flowing, in order, around a floored stream", () => {
    let state = HoldBack.make()
    const first = planned(state, [event("a", 1), event("s", 2, 1n)], new Map())
    state = HoldBack.commit(state, first)
    assert.deepStrictEqual(versions(first.deliver), ["a@1"])
    const decided = planned(state, [event("a", 2), event("s", 3)], new Map([["s", 3]]))
    // s v2 (held, removed) is dropped; s v3 is delivered; a goes on.
    assert.deepStrictEqual(versions(decided.deliver), ["a@2", "s@3"])
    const next = HoldBack.commit(state, decided)
    assert.strictEqual(HoldBack.heldCount(next), 0)
    assert.isTrue(Cursor.order(HoldBack.safeCursor(next, decided.read), decided.read) === 0)
  })
})
