/**
 * HoldBack as a pure decision: bounded state (issue 11, item 9), and what a
 * forgotten stream needs when it appears again.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cursor from "../src/Cursor.js"
import * as HoldBack from "../src/HoldBack.js"
import type * as Checkpoint from "../src/Checkpoint.js"
import type { RecordedEvent } from "../src/RecordedEvent.js"
import { event, run } from "./holdBackFixtures.js"

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

  it("a stream skipped after a restart (v5 before v4 in cursor order) stays recorded until v4 is read again: retain 0, one restart", () => {
    // Before the restart, S v4 (xid 15) and v5 (xid 12) were both delivered past the checkpoint's cursor.
    const [v4, v5] = [event("S", 4, 15n), event("S", 5, 12n)]
    let state = HoldBack.resume(new Map([["S", 5]]), { retain: 0 })
    const first = run(state, [v5])
    assert.deepStrictEqual(first.deliver, [])
    state = first.state
    // v4 is still to be read again: the stream is remembered and every checkpoint records it.
    assert.deepStrictEqual(HoldBack.checkpoint(state, Cursor.of(v5)).delivered, new Map([["S", 5]]))
    assert.deepStrictEqual(HoldBack.unknownStreams(state, [v4]), [])
    const second = HoldBack.step(state, [v4], new Map([["S", 5]]), "sub")
    if ("_tag" in second) return assert.fail(second.message)
    assert.deepStrictEqual(second.deliver, [])
    const v6 = event("S", 6, 20n)
    const third = run(second.state, [v6])
    assert.deepStrictEqual(third.deliver.map((e) => e.streamVersion), [6])
    // Its next version read: nothing of it is skipped any more, and it is forgotten like any other.
    assert.strictEqual(third.state.storage.skip.size, 0)
    assert.strictEqual(HoldBack.checkpoint(third.state, Cursor.of(v6)).delivered.size, 0)
    assert.strictEqual(HoldBack.rememberedCount(third.state), 0)
  })

  it("a stream skipped after a restart stays recorded across a second restart: default retain, two restarts", () => {
    const [v4, v5] = [event("S", 4, 15n), event("S", 5, 12n)]
    const first = run(HoldBack.resume(new Map([["S", 5]])), [v5])
    const checkpoint = HoldBack.checkpoint(first.state, Cursor.of(v5))
    assert.deepStrictEqual(checkpoint.delivered, new Map([["S", 5]]))
    // Restart 2 from that checkpoint: v4 is read again and skipped, never an ordering violation.
    const state = HoldBack.resume(checkpoint.delivered)
    const unknown = HoldBack.unknownStreams(state, [v4])
    const baseline = new Map(unknown.map((streamId) => [streamId, 5] as const))
    const second = HoldBack.step(state, [v4], baseline, "sub")
    if ("_tag" in second) return assert.fail(second.message)
    assert.deepStrictEqual(second.deliver, [])
  })

  it("streams whose later version commits first, over a simulated log: restarts, any page size, any retain, a held stream erased: every stream once, in order", () => {
    // A blocker whose v2 sorts first and v1 last: held while everything else is delivered past the safe cursor.
    let log: Array<RecordedEvent> = [event("blocker", 2, 50n)]
    // Streams whose versions sort out of order (v(n+1) before v(n)), interleaved with streams in order.
    let xid = 100n
    for (let s = 0; s < 6; s++) {
      for (let v = 1; v <= 6; v += 2) {
        // v+1 takes its transaction id before v commits.
        log.push(event(`inv-${s}`, v + 1, xid + 1n), event(`inv-${s}`, v, xid + 3n))
        log.push(event(`flat-${s}-${v}`, 1, xid + 2n))
        xid += 4n
      }
    }
    log.push(event("blocker", 1, 1_000_000n))
    log.sort((a, b) => Cursor.order(Cursor.of(a), Cursor.of(b)))
    const full = log
    const baselineOf = (streamIds: ReadonlyArray<string>, upTo: Cursor.Cursor) => {
      const out = new Map<string, number>()
      for (const e of log) {
        if (streamIds.includes(e.streamId) && Cursor.order(Cursor.of(e), upTo) <= 0) {
          out.set(e.streamId, Math.max(out.get(e.streamId) ?? 0, e.streamVersion))
        }
      }
      return out
    }
    for (const retain of [0, 1, 4096]) {
      // A page must reach past an inversion (3 events) for a restart after every poll to make progress.
      for (const batch of [3, 4, 5, 8]) {
        for (const every of [1, 2, 3, 7, 1000]) {
          log = full
          const seen = new Map<string, Array<number>>()
          let checkpoint: Checkpoint.Checkpoint = { cursor: Cursor.start, delivered: new Map() }
          let state = HoldBack.resume(checkpoint.delivered, { retain })
          let read = checkpoint.cursor
          let restarts = 0
          for (let polls = 1; polls < 1000; polls++) {
            const page = log.filter((e) => Cursor.order(Cursor.of(e), read) > 0).slice(0, batch)
            if (page.length === 0) {
              state = HoldBack.caughtUp(state)
              break
            }
            const baseline = baselineOf(HoldBack.unknownStreams(state, page), read)
            const result = HoldBack.step(state, page, baseline, "sub")
            const label = `retain ${retain}, batch ${batch}, restart every ${every}`
            if ("_tag" in result) return assert.fail(`${label}: ${result.message}`)
            for (const e of result.deliver) seen.set(e.streamId, [...(seen.get(e.streamId) ?? []), e.streamVersion])
            state = result.state
            read = Cursor.of(page[page.length - 1]!)
            if (polls % every === 0) {
              // Restart from the checkpoint persisted now; before the first, the held blocker is erased.
              checkpoint = HoldBack.checkpoint(state, read)
              if (restarts++ === 0) log = full.filter((e) => e.streamId !== "blocker")
              state = HoldBack.resume(checkpoint.delivered, { retain })
              read = checkpoint.cursor
            }
          }
          for (const [streamId, versions] of seen) {
            const expected = streamId.startsWith("inv") ? [1, 2, 3, 4, 5, 6] : streamId === "blocker" ? [1, 2] : [1]
            assert.deepStrictEqual(versions, expected, `${streamId}: retain ${retain}, batch ${batch}, restart every ${every}`)
          }
          assert.strictEqual(seen.size - (seen.has("blocker") ? 1 : 0), 6 + 18)
          assert.strictEqual(HoldBack.checkpoint(state, read).delivered.size, 0, "caught up: nothing past the cursor")
          assert.isAtMost(HoldBack.rememberedCount(state), retain)
        }
      }
    }
  })

  it("caught up after a restart, streams skipped and not seen again are dropped", () => {
    const state = HoldBack.caughtUp(HoldBack.resume(new Map([["gone", 3]]), { retain: 0 }))
    assert.strictEqual(HoldBack.rememberedCount(state), 0)
    assert.strictEqual(HoldBack.checkpoint(state, Cursor.start).delivered.size, 0)
  })
})

