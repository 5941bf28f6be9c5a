/**
 * HoldBack resumed with versions recorded past its cursor that may lie above
 * the xmin horizon (a start at the head: everything committed above the
 * commit-safe head is recorded as delivered): they are skipped until the
 * read cursor passes them, whatever polls find nothing meanwhile and
 * whatever a stream's next version is delivered first.
 */
import { assert, describe, it } from "@effect/vitest"
import type * as Checkpoint from "../src/Checkpoint.js"
import * as Cursor from "../src/Cursor.js"
import * as HoldBack from "../src/HoldBack.js"
import type { RecordedEvent } from "../src/RecordedEvent.js"
import { event, run } from "./holdBackFixtures.js"

const versions = (events: ReadonlyArray<RecordedEvent>) => events.map((e) => `${e.streamId}@${e.streamVersion}`)

describe("HoldBack, versions recorded above the horizon", () => {
  it("are skipped until the read cursor reaches upTo: polls that find nothing, and a stream's next version sorting first, do not release them", () => {
    // Before the start: T v1 (xid 102) and A v1 (xid 101) committed above the horizon (xid 100 is open). The
    // start records both as delivered; T v2 is written after it by xid 99's transaction, so it sorts first.
    const [t2, a1, t1, t3] = [event("T", 2, 99n), event("A", 1, 101n), event("T", 1, 102n), event("T", 3, 200n)]
    const start: Checkpoint.Checkpoint = { cursor: { transactionId: 50n, position: 0n }, delivered: new Map([["A", 1], ["T", 1]]) }
    let state = HoldBack.resume(start.delivered, { upTo: Cursor.of(t1) })
    assert.deepStrictEqual(HoldBack.skippedUpTo(state), Cursor.of(t1))
    // The horizon is held: polls find nothing; a head observed below upTo proves nothing either.
    state = HoldBack.caughtUp(state)
    state = HoldBack.observeHead(state, start.cursor)
    state = HoldBack.caughtUp(state)
    assert.deepStrictEqual(HoldBack.checkpoint(state, start.cursor), start, "a checkpoint still records them")
    // One event per page.
    const first = run(state, [t2])
    assert.deepStrictEqual(versions(first.deliver), ["T@2"])
    const second = run(first.state, [a1])
    assert.deepStrictEqual(second.deliver, [])
    assert.deepStrictEqual(HoldBack.checkpoint(second.state, Cursor.of(a1)).delivered, new Map([["A", 1], ["T", 2]]))
    const third = run(second.state, [t1])
    assert.deepStrictEqual(third.deliver, [], "T v1 was committed before the start: skipped, not a regression")
    // The read cursor reached upTo: nothing is skipped any more.
    assert.isUndefined(HoldBack.skippedUpTo(third.state))
    assert.strictEqual(third.state.storage.skip.size, 0)
    const fourth = run(third.state, [t3])
    assert.deepStrictEqual(versions(fourth.deliver), ["T@3"])
    assert.strictEqual(HoldBack.checkpoint(fourth.state, Cursor.of(t3)).delivered.size, 0)
  })

  it("a poll that finds nothing after a commit-safe head at or past upTo was observed releases them; one observed below does not", () => {
    const upTo: Cursor.Cursor = { transactionId: 10n, position: 10n }
    let state = HoldBack.resume(new Map([["S", 3]]), { retain: 0, upTo })
    state = HoldBack.observeHead(state, { transactionId: 9n, position: 40n })
    state = HoldBack.caughtUp(state)
    assert.deepStrictEqual(HoldBack.checkpoint(state, Cursor.start).delivered, new Map([["S", 3]]))
    state = HoldBack.observeHead(state, upTo)
    state = HoldBack.caughtUp(state)
    assert.isUndefined(HoldBack.skippedUpTo(state))
    assert.strictEqual(HoldBack.checkpoint(state, Cursor.start).delivered.size, 0)
    assert.strictEqual(HoldBack.rememberedCount(state), 0)
  })

  it("without upTo (delivered events, below the horizon) the first poll that finds nothing releases them; with nothing recorded, upTo is ignored", () => {
    const legacy = HoldBack.resume(new Map([["S", 3]]), { retain: 0 })
    assert.isUndefined(HoldBack.skippedUpTo(legacy))
    assert.strictEqual(HoldBack.checkpoint(HoldBack.caughtUp(legacy), Cursor.start).delivered.size, 0)
    const empty = HoldBack.resume(new Map(), { upTo: { transactionId: 5n, position: 5n } })
    assert.isUndefined(HoldBack.skippedUpTo(empty))
    assert.strictEqual(HoldBack.observeHead(empty, Cursor.start), empty)
  })

  it("a head start over a simulated log with a held horizon: any page size, restarts, any retain: exactly what is committed after the start, each stream in order", () => {
    // xid 100 holds the horizon across the start. Streams late-0..3 took xids 101-104 before the start and write
    // their next version after it (sorting before the versions committed before it); streams busy-0..3 commit
    // v1-v2 above the horizon before the start and v3-v4 after it; old-0..3 commit v1 below it before the start.
    type Entry = { readonly event: RecordedEvent; readonly before: boolean }
    const entries: Array<Entry> = []
    const add = (streamId: string, version: number, xid: bigint, before: boolean) =>
      entries.push({ event: event(streamId, version, xid), before })
    for (let i = 0; i < 4; i++) add(`old-${i}`, 1, 40n + BigInt(i), true)
    for (let i = 0; i < 4; i++) {
      add(`late-${i}`, 1, 110n + BigInt(i), true)
      add(`late-${i}`, 2, 120n + BigInt(i), true)
      add(`late-${i}`, 3, 101n + BigInt(i), false)
      add(`busy-${i}`, 1, 130n + BigInt(i), true)
      add(`busy-${i}`, 2, 140n + BigInt(i), true)
      add(`busy-${i}`, 3, 200n + BigInt(i), false)
      add(`busy-${i}`, 4, 210n + BigInt(i), false)
      add(`old-${i}`, 2, 220n + BigInt(i), false)
    }
    add("held", 1, 100n, false)
    const ordered = (list: ReadonlyArray<Entry>) =>
      [...list].sort((a, b) => Cursor.order(Cursor.of(a.event), Cursor.of(b.event))).map((e) => e.event)
    const atStart = ordered(entries.filter((e) => e.before))
    const everything = ordered(entries)
    // The head start, as `Subscription` resolves it: the commit-safe head (below xid 100), every stream above
    // it recorded at its committed version, upTo the log's last cursor.
    const head = Cursor.of(atStart.filter((e) => e.transactionId < 100n).at(-1)!)
    const recorded = new Map<string, number>()
    for (const e of atStart) {
      if (Cursor.order(Cursor.of(e), head) > 0) recorded.set(e.streamId, Math.max(recorded.get(e.streamId) ?? 0, e.streamVersion))
    }
    const expected = new Map<string, Array<number>>()
    for (const { event: e } of entries.filter((x) => !x.before)) {
      expected.set(e.streamId, [...(expected.get(e.streamId) ?? []), e.streamVersion].sort((a, b) => a - b))
    }
    const baselineOf = (log: ReadonlyArray<RecordedEvent>, streamIds: ReadonlyArray<string>, upTo: Cursor.Cursor) => {
      const out = new Map<string, number>()
      for (const e of log) {
        if (streamIds.includes(e.streamId) && Cursor.order(Cursor.of(e), upTo) <= 0) {
          out.set(e.streamId, Math.max(out.get(e.streamId) ?? 0, e.streamVersion))
        }
      }
      return out
    }
    for (const retain of [0, 4096]) {
      for (const batch of [1, 2, 3, 5, 100]) {
        for (const every of [1, 2, 3, 1000]) {
          const label = `retain ${retain}, batch ${batch}, restart every ${every}`
          let checkpoint: Checkpoint.Checkpoint = { cursor: head, delivered: recorded }
          const open = (log: ReadonlyArray<RecordedEvent>) =>
            HoldBack.resume(checkpoint.delivered, { retain, upTo: Cursor.of(log.at(-1)!) })
          let state = open(atStart)
          let read = checkpoint.cursor
          // Held: every poll finds nothing (all of it is above the horizon); a head is observed each time, and a
          // restart from a checkpoint written now is still the same start.
          for (let i = 0; i < 3; i++) {
            state = HoldBack.observeHead(HoldBack.caughtUp(state), head)
            checkpoint = HoldBack.checkpoint(state, read)
            if (i === 1) state = open(atStart)
          }
          assert.deepStrictEqual(checkpoint, { cursor: head, delivered: recorded }, label)
          // Released: everything commits; polls read the whole log from the read cursor.
          const seen = new Map<string, Array<number>>()
          let polls = 0
          for (; polls < 1000; polls++) {
            const page = everything.filter((e) => Cursor.order(Cursor.of(e), read) > 0).slice(0, batch)
            if (page.length === 0) {
              state = HoldBack.caughtUp(state)
              break
            }
            const unknown = HoldBack.unknownStreams(state, page)
            const result = HoldBack.step(state, page, baselineOf(everything, unknown, read), "sub")
            if ("_tag" in result) return assert.fail(`${label}: ${result.message}`)
            for (const e of result.deliver) seen.set(e.streamId, [...(seen.get(e.streamId) ?? []), e.streamVersion])
            state = result.state
            read = Cursor.of(page.at(-1)!)
            if ((polls + 1) % every === 0) {
              checkpoint = HoldBack.checkpoint(state, read)
              state = open(everything)
              read = checkpoint.cursor
            }
          }
          assert.isBelow(polls, 1000, label)
          assert.deepStrictEqual(Object.fromEntries(seen), Object.fromEntries(expected), label)
          assert.strictEqual(HoldBack.checkpoint(state, read).delivered.size, 0, `${label}: caught up`)
          assert.isUndefined(HoldBack.skippedUpTo(state), label)
        }
      }
    }
  })
})
