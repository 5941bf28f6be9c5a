import { assert, describe, it } from "@effect/vitest"
// node:assert's deepStrictEqual: chai's takes `Option.none()` for equal to any `Option.some(…)`.
import { deepStrictEqual } from "@effect/vitest/utils"
import {
  retentionSuite,
  truncationDeadLetterSuite,
  truncationStorageSuite,
  truncationSubscriptionSuite
} from "@mire/core/conformance"
import * as Effect from "effect/Effect"
import * as DeadLetters from "../src/DeadLetters.js"
import * as Memory from "../src/internal/memory/eventStore.js"
import * as Layer from "effect/Layer"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Retention from "../src/Retention.js"
import * as SubscriptionStore from "../src/SubscriptionStore.js"
import { memoryLayer } from "./memoryRaw.js"

const extent = (overrides: Partial<Retention.Extent> = {}): Retention.Extent => ({
  version: 100,
  truncatedBefore: 1,
  snapshotVersion: 80,
  snapshotSchemaVersion: 1,
  deadLetterFrom: null,
  deleted: false,
  youngFrom: null,
  ...overrides
})

const policy = (p: Retention.Policy): Retention.CheckedPolicy => Either.getOrThrow(Retention.validate(p))

describe("Retention.validate", () => {
  it("accepts maxAge, maxCount or both", () => {
    deepStrictEqual(policy({ maxCount: 5 }), { maxAge: Option.none(), maxCount: Option.some(5) })
    const aged = policy({ maxAge: "2 days" })
    assert.strictEqual(Duration.toMillis(Option.getOrThrow(aged.maxAge)), 172_800_000)
    assert.isTrue(Option.isSome(policy({ maxAge: 0, maxCount: 1 }).maxCount))
  })

  it("refuses an empty policy, a count that is not a positive integer, an infinite, negative or NaN age", () => {
    const bads: ReadonlyArray<Retention.Policy> = [{}, { maxCount: 0 }, { maxCount: -3 }, { maxCount: 2.5 }, { maxCount: Number.NaN }, { maxAge: Number.POSITIVE_INFINITY }, { maxAge: Duration.infinity }, { maxAge: -1 }, { maxAge: Number.NaN }, { maxAge: "-5 seconds" }]
    for (const bad of bads) {
      const result = Retention.validate(bad)
      assert.isTrue(Either.isLeft(result), JSON.stringify(bad))
      if (Either.isLeft(result)) assert.strictEqual(result.left._tag, "InvalidInput")
    }
  })

  it("cutoff is now minus maxAge, none without maxAge", () => {
    deepStrictEqual(Retention.cutoff(policy({ maxAge: "1 second" }), 10_000), Option.some(new Date(9_000)))
    assert.isTrue(Option.isNone(Retention.cutoff(policy({ maxCount: 1 }), 10_000)))
  })
})

describe("Retention.decide", () => {
  it("by count: the newest maxCount stay, cut at the snapshot when it is older", () => {
    assert.deepStrictEqual(Retention.decide(policy({ maxCount: 30 }), extent(), 1), { _tag: "Truncate", before: 71, wanted: 71, limitedBy: null })
    assert.deepStrictEqual(Retention.decide(policy({ maxCount: 10 }), extent(), 1), { _tag: "Truncate", before: 80, wanted: 91, limitedBy: "snapshot" })
    assert.deepStrictEqual(Retention.decide(policy({ maxCount: 100 }), extent(), 1), { _tag: "Keep" })
    assert.deepStrictEqual(Retention.decide(policy({ maxCount: 1000 }), extent(), 1), { _tag: "Keep" })
  })

  it("by age: from the first young version; everything old means up to the snapshot", () => {
    assert.deepStrictEqual(Retention.decide(policy({ maxAge: "1 day" }), extent({ youngFrom: 50 }), 1), {
      _tag: "Truncate",
      before: 50,
      wanted: 50,
      limitedBy: null
    })
    assert.deepStrictEqual(Retention.decide(policy({ maxAge: "1 day" }), extent({ youngFrom: null }), 1), {
      _tag: "Truncate",
      before: 80,
      wanted: 101,
      limitedBy: "snapshot"
    })
    assert.deepStrictEqual(Retention.decide(policy({ maxAge: "1 day" }), extent({ youngFrom: 1 }), 1), { _tag: "Keep" })
  })

  it("both: an event goes when either says so (the later cut)", () => {
    const both = policy({ maxAge: "1 day", maxCount: 40 })
    assert.deepStrictEqual(Retention.decide(both, extent({ youngFrom: 50 }), 1), { _tag: "Truncate", before: 61, wanted: 61, limitedBy: null })
    assert.deepStrictEqual(Retention.decide(both, extent({ youngFrom: 70 }), 1), { _tag: "Truncate", before: 70, wanted: 70, limitedBy: null })
  })

  it("no snapshot, or none past the current base: nothing removed", () => {
    assert.deepStrictEqual(Retention.decide(policy({ maxCount: 10 }), extent({ snapshotVersion: null }), 1), {
      _tag: "NoSnapshot",
      wanted: 91
    })
    assert.deepStrictEqual(Retention.decide(policy({ maxCount: 10 }), extent({ truncatedBefore: 80 }), 1), {
      _tag: "NoSnapshot",
      wanted: 91
    })
    assert.deepStrictEqual(Retention.decide(policy({ maxCount: 10 }), extent({ truncatedBefore: 95 }), 1), { _tag: "Keep" })
  })

  it("a deleted stream is kept as it is (its tombstone is all there is)", () => {
    assert.deepStrictEqual(Retention.decide(policy({ maxCount: 1 }), extent({ deleted: true }), 1), { _tag: "Keep" })
  })
})

const tagOf = (result: ReturnType<typeof Retention.truncation>) =>
  Either.match(result, { onLeft: (e) => e._tag, onRight: (cut) => Option.match(cut, { onNone: () => "noop", onSome: (n) => n }) })

describe("Retention.truncation", () => {
  const tag = (result: ReturnType<typeof Retention.truncation>) =>
    Either.match(result, { onLeft: (e) => e._tag, onRight: (cut) => Option.match(cut, { onNone: () => "noop", onSome: (n) => n }) })

  it("cuts up to and including the snapshot's version, never past it", () => {
    assert.strictEqual(tag(Retention.truncation("s", extent(), 80, 1)), 80)
    assert.strictEqual(tag(Retention.truncation("s", extent(), 2, 1)), 2)
    assert.strictEqual(tag(Retention.truncation("s", extent(), 81, 1)), "SnapshotRequired")
    assert.strictEqual(tag(Retention.truncation("s", extent({ snapshotVersion: null }), 2, 1)), "SnapshotRequired")
  })

  it("no further than before is nothing to do; past the version is bad input; deleted is StreamDeleted", () => {
    assert.strictEqual(tag(Retention.truncation("s", extent({ truncatedBefore: 50 }), 50, 1)), "noop")
    assert.strictEqual(tag(Retention.truncation("s", extent({ truncatedBefore: 50 }), 10, 1)), "noop")
    assert.strictEqual(tag(Retention.truncation("s", extent(), 1, 1)), "noop")
    assert.strictEqual(tag(Retention.truncation("s", extent(), 101, 1)), "InvalidInput")
    assert.strictEqual(tag(Retention.truncation("s", extent({ deleted: true }), 2, 1)), "StreamDeleted")
  })
})

describe("Retention: the snapshot version and dead letters", () => {
  it("a snapshot of another snapshot version counts as none (after a version bump)", () => {
    const stale = extent({ snapshotSchemaVersion: 1 })
    assert.deepStrictEqual(Retention.decide(policy({ maxCount: 10 }), stale, 2), { _tag: "NoSnapshot", wanted: 91 })
    assert.deepStrictEqual(Retention.decide(policy({ maxCount: 10 }), stale, 1), { _tag: "Truncate", before: 80, wanted: 91, limitedBy: "snapshot" })
    const refused = Retention.truncation("s", stale, 50, 2)
    assert.isTrue(Either.isLeft(refused))
    if (Either.isLeft(refused) && refused.left._tag === "SnapshotRequired") {
      assert.deepStrictEqual(refused.left.unusable, { schemaVersion: 1, expected: 2 })
      assert.include(refused.left.message, "snapshot version 1, not 2")
    } else assert.fail("expected SnapshotRequired")
    assert.strictEqual(Retention.usableSnapshot(stale, 2), null)
    assert.strictEqual(Retention.usableSnapshot(stale, 1), 80)
  })

  it("expectedSnapshotVersion: a number, or the aggregate's snapshot version; none or a fraction is bad input", () => {
    assert.deepStrictEqual(Retention.expectedSnapshotVersion(3), Either.right(3))
    assert.deepStrictEqual(Retention.expectedSnapshotVersion({ snapshot: Option.some({ version: 4 }) }), Either.right(4))
    assert.isTrue(Either.isLeft(Retention.expectedSnapshotVersion({ category: "x", snapshot: Option.none() })))
    assert.isTrue(Either.isLeft(Retention.expectedSnapshotVersion(Number.NaN)))
  })

  it("never past the lowest dead letter: truncation refuses, retention stops there or keeps everything", () => {
    const lettered = extent({ deadLetterFrom: 40 })
    assert.strictEqual(tagOf(Retention.truncation("s", lettered, 41, 1)), "DeadLetterPending")
    assert.strictEqual(tagOf(Retention.truncation("s", lettered, 40, 1)), 40)
    assert.deepStrictEqual(Retention.decide(policy({ maxCount: 10 }), lettered, 1), { _tag: "Truncate", before: 40, wanted: 91, limitedBy: "deadLetter" })
    assert.deepStrictEqual(Retention.decide(policy({ maxCount: 10 }), extent({ deadLetterFrom: 30, truncatedBefore: 30 }), 1), {
      _tag: "DeadLettered",
      wanted: 91,
      deadLetterFrom: 30
    })
    assert.deepStrictEqual(Retention.decide(policy({ maxCount: 10 }), extent({ deadLetterFrom: 95 }), 1), { _tag: "Truncate", before: 80, wanted: 91, limitedBy: "snapshot" })
    let report = Retention.emptyReport(false)
    report = Retention.record(report, { streamId: "a", decision: { _tag: "Truncate", before: 40, wanted: 91, limitedBy: "deadLetter" }, removed: 39 })
    report = Retention.record(report, { streamId: "b", decision: { _tag: "DeadLettered", wanted: 91, deadLetterFrom: 30 }, removed: 0 })
    assert.deepStrictEqual([report.limitedByDeadLetters, report.limitedBySnapshot, report.truncated], [2, 0, 1])
  })

  it("nextStep: at most chunkSize versions per step, ending at the target", () => {
    assert.strictEqual(Retention.nextStep(1, 5000), 1 + Retention.chunkSize)
    assert.strictEqual(Retention.nextStep(4500, 5000), 5000)
    assert.strictEqual(Retention.nextStep(1, 2500, 1000), 1001)
  })
})

describe("Retention.record", () => {
  it("sums outcomes into a report, naming the skipped streams up to the sample size", () => {
    let report = Retention.emptyReport(false)
    report = Retention.record(report, { streamId: "a", decision: { _tag: "Truncate", before: 80, wanted: 91, limitedBy: "snapshot" }, removed: 79 })
    report = Retention.record(report, { streamId: "b", decision: { _tag: "Truncate", before: 5, wanted: 5, limitedBy: null }, removed: 4 })
    report = Retention.record(report, { streamId: "c", decision: { _tag: "Keep" }, removed: 0 })
    for (let i = 0; i < Retention.sampleSize + 5; i++) {
      report = Retention.record(report, { streamId: `n${i}`, decision: { _tag: "NoSnapshot", wanted: 9 }, removed: 0 })
    }
    assert.strictEqual(report.streams, 3 + Retention.sampleSize + 5)
    assert.strictEqual(report.truncated, 2)
    assert.strictEqual(report.eventsRemoved, 83)
    assert.strictEqual(report.limitedBySnapshot, 1)
    assert.strictEqual(report.skippedNoSnapshot, Retention.sampleSize + 5)
    assert.strictEqual(report.skippedSample.length, Retention.sampleSize)
    assert.strictEqual(report.skippedSample[0], "n0")
  })
})

retentionSuite("in-memory", memoryLayer)
truncationDeadLetterSuite("in-memory", DeadLetters.layerMemory.pipe(Layer.provideMerge(memoryLayer)))
truncationStorageSuite(
  "in-memory",
  Effect.map(Memory.makeStorage, ({ storage }) => storage),
  Layer.empty
)
truncationSubscriptionSuite("in-memory", SubscriptionStore.layerMemory.pipe(Layer.provideMerge(memoryLayer)))
