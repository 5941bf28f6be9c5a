import { assert, describe, it } from "@effect/vitest"
import type * as Lease from "../src/Lease.js"
import * as Rebalance from "../src/Rebalance.js"

const now = 1_000_000
const ids = (n: number, prefix = "p") => Array.from({ length: n }, (_, i) => `${prefix}#${i}of${n}`)
const held = (id: string, workerId: string, until = now + 30_000): Lease.LeaseStatus => ({
  subscriptionId: id,
  workerId,
  fenceToken: 1n,
  leasedUntil: new Date(until)
})

/** Every worker decides from the same picture; the leases then move as they decided. */
const settle = (
  units: ReadonlyArray<string>,
  workers: ReadonlyArray<string>,
  initial: Map<string, string> = new Map()
): { readonly holders: Map<string, string>; readonly rounds: number; readonly attempts: number } => {
  const holders = new Map(initial)
  let attempts = 0
  for (let round = 1; round <= 20; round++) {
    const picture = (me: string): Rebalance.Picture => ({
      me,
      now,
      workers,
      units: units.map((id) => ({ id, lease: holders.has(id) ? held(id, holders.get(id)!) : undefined })),
      leading: new Set(units.filter((id) => holders.get(id) === me)),
      excluded: new Set(),
      freeBefore: new Set()
    })
    const decisions = workers.map((me) => [me, Rebalance.decide(picture(me))] as const)
    let moved = false
    for (const [, d] of decisions) {
      for (const id of d.handOver) {
        holders.delete(id)
        moved = true
      }
    }
    for (const [me, d] of decisions) {
      for (const id of d.acquire) {
        attempts++
        // The conditional acquire: the first to try wins, the rest are refused.
        if (!holders.has(id)) {
          holders.set(id, me)
          moved = true
        }
      }
    }
    if (!moved) return { holders, rounds: round, attempts }
  }
  return assert.fail("did not settle in 20 rounds")
}

const counts = (holders: Map<string, string>, workers: ReadonlyArray<string>) =>
  workers.map((w) => Array.from(holders.values()).filter((h) => h === w).length)

describe("Rebalance.decide", () => {
  it("three workers, 2 projections × 6 shards: 4 each, no unit tried by two workers", () => {
    const units = [...ids(6, "a"), ...ids(6, "b")]
    const { holders, attempts } = settle(units, ["w1", "w2", "w3"])
    assert.deepStrictEqual(counts(holders, ["w1", "w2", "w3"]), [4, 4, 4])
    assert.strictEqual(attempts, 12, "every unit was tried once")
  })

  it("one worker took everything, two join: it hands over down to its share", () => {
    const units = ids(12)
    const { holders } = settle(units, ["w1", "w2", "w3"], new Map(units.map((id) => [id, "w1"])))
    assert.deepStrictEqual(counts(holders, ["w1", "w2", "w3"]), [4, 4, 4])
  })

  it("a worker leaves: its units spread over the others, the others keep theirs", () => {
    const units = ids(12)
    const first = settle(units, ["w1", "w2", "w3"]).holders
    const after = new Map(Array.from(first).filter(([, w]) => w !== "w3"))
    const { holders } = settle(units, ["w1", "w2"], after)
    assert.deepStrictEqual(counts(holders, ["w1", "w2"]), [6, 6])
    for (const [id, w] of after) assert.strictEqual(holders.get(id), w, `${id} stayed with ${w}`)
  })

  it("share is ⌈units ÷ workers⌉: 16 units, 5 workers → nobody above 4", () => {
    const workers = ["w1", "w2", "w3", "w4", "w5"]
    const { holders } = settle(ids(16), workers)
    assert.strictEqual(holders.size, 16)
    for (const n of counts(holders, workers)) assert.isAtMost(n, 4)
  })

  it("a worker whose lease lapsed is not counted: its free units go to the live ones at once", () => {
    const units = ids(4)
    const lapsed = (id: string) => held(id, "dead", now - 1)
    const decision = Rebalance.decide({
      me: "w1",
      now,
      workers: ["w1", "dead"],
      units: units.map((id, i) => ({ id, lease: i < 2 ? lapsed(id) : held(id, "w1") })),
      leading: new Set(units.slice(2)),
      excluded: new Set(),
      freeBefore: new Set()
    })
    assert.strictEqual(decision.share, 4)
    assert.deepStrictEqual([...decision.acquire].sort(), units.slice(0, 2))
    assert.deepStrictEqual(decision.handOver, [])
  })

  it("a unit still leased by a worker that stopped beating is nobody's until its lease lapses", () => {
    const decision = Rebalance.decide({
      me: "w1",
      now,
      workers: ["w1"],
      units: [{ id: "u", lease: held("u", "gone") }],
      leading: new Set(),
      excluded: new Set(),
      freeBefore: new Set()
    })
    assert.strictEqual(decision.assignment.get("u"), null)
    assert.deepStrictEqual(decision.acquire, [])
  })

  it("a unit free at two looks is taken by a worker below its share, whoever it was assigned to", () => {
    const units = ids(2)
    const picture = (freeBefore: ReadonlySet<string>): Rebalance.Picture => ({
      me: "w1",
      now,
      workers: ["w1", "w2"],
      units: units.map((id) => ({ id, lease: undefined })),
      leading: new Set(),
      excluded: new Set(),
      freeBefore
    })
    const first = Rebalance.decide(picture(new Set()))
    assert.strictEqual(first.acquire.length, 1, "only its own at the first look")
    const second = Rebalance.decide(picture(first.free))
    assert.strictEqual(second.acquire.length, 1, "still at most its share")
    const alone = Rebalance.decide({ ...picture(first.free), workers: ["w1"] })
    assert.strictEqual(alone.acquire.length, 2)
  })

  it("an excluded (failed here) unit is never acquired by this worker", () => {
    const decision = Rebalance.decide({
      me: "w1",
      now,
      workers: ["w1"],
      units: [{ id: "u", lease: undefined }],
      leading: new Set(),
      excluded: new Set(["u"]),
      freeBefore: new Set(["u"])
    })
    assert.deepStrictEqual(decision.acquire, [])
  })

  it("a released lease (the epoch) is free, and its holder still counts as live", () => {
    const decision = Rebalance.decide({
      me: "w1",
      now,
      workers: ["w1", "w2"],
      units: [
        { id: "u1", lease: held("u1", "w2", 0) },
        { id: "u2", lease: held("u2", "w2") }
      ],
      leading: new Set(),
      excluded: new Set(),
      freeBefore: new Set()
    })
    assert.strictEqual(decision.share, 1)
    assert.deepStrictEqual(decision.acquire, ["u1"])
  })

  it("scores spread: each of 4 workers ranks first for about a quarter of 4,000 units", () => {
    const workers = ["w1", "w2", "w3", "w4"]
    const firsts = new Map(workers.map((w) => [w, 0]))
    for (const id of ids(4000)) {
      const best = workers.reduce((a, b) => (Rebalance.score(id, b) > Rebalance.score(id, a) ? b : a))
      firsts.set(best, firsts.get(best)! + 1)
    }
    for (const n of firsts.values()) assert.isTrue(n > 850 && n < 1150, `${n} of 4000`)
  })

  it("unitsKey: one key per set of units, whatever the order; another set, another key", () => {
    assert.strictEqual(Rebalance.unitsKey(["b", "a", "c#0of2"]), Rebalance.unitsKey(["c#0of2", "a", "b", "a"]))
    assert.notStrictEqual(Rebalance.unitsKey(["a", "b"]), Rebalance.unitsKey(["a", "b", "c"]))
    assert.notStrictEqual(Rebalance.unitsKey(["a", "b"]), Rebalance.unitsKey(["a", "c"]))
    // Ids are not concatenated ambiguously.
    assert.notStrictEqual(Rebalance.unitsKey(["ab", "c"]), Rebalance.unitsKey(["a", "bc"]))
    const keys = new Set(Array.from({ length: 2000 }, (_, i) => Rebalance.unitsKey(ids(1 + (i % 50), `p${i}`))))
    assert.strictEqual(keys.size, 2000, "no collision among 2,000 sets")
  })
})
