import { assert, describe, it } from "@effect/vitest"
// node:assert's deepStrictEqual: chai's takes `Option.none()` for equal to any `Option.some(…)`.
import { deepStrictEqual } from "@effect/vitest/utils"
import { partitionSuite } from "@mire/core/conformance"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as EventStore from "../src/EventStore.js"
import { StoreError } from "../src/EventStoreError.js"
import * as ExpectedVersion from "../src/ExpectedVersion.js"
import * as InMemory from "../src/InMemory.js"
import * as Partition from "../src/Partition.js"
import * as Projection from "../src/Projection.js"
import * as ProjectionRunner from "../src/ProjectionRunner.js"
import * as SubscriptionId from "../src/SubscriptionId.js"
import * as SubscriptionStore from "../src/SubscriptionStore.js"
import { memoryReadModel } from "./memoryRaw.js"

partitionSuite("in-memory", memoryReadModel.pipe(Layer.provideMerge(InMemory.layer)))

describe("Partition", () => {
  it("shardOf is stable, in range, and spreads streams evenly", () => {
    const counts = new Array<number>(8).fill(0)
    for (let i = 0; i < 8000; i++) {
      const shard = Partition.shardOf(`account-${i}`, 8)
      assert.strictEqual(Partition.shardOf(`account-${i}`, 8), shard)
      assert.isTrue(Number.isInteger(shard) && shard >= 0 && shard < 8)
      counts[shard]!++
    }
    // 1000 expected per shard: a hash that spreads evenly stays well within ±15%.
    for (const n of counts) assert.isTrue(n > 850 && n < 1150, `shard sizes ${counts.join(",")}`)
    assert.strictEqual(Partition.shardOf("anything", 1), 0)
    assert.strictEqual(Partition.shardOf("", 4), Partition.shardOf("", 4))
  })

  it("unit ids name the shard and parse back; one partition is the projection's own id", () => {
    assert.strictEqual(Partition.unitId("totals", { index: 3, count: 16 }), "totals#3of16")
    assert.strictEqual(Partition.unitId("totals", { index: 0, count: 1 }), "totals")
    deepStrictEqual(Partition.parse("totals", "totals#3of16"), Option.some({ index: 3, count: 16 }))
    deepStrictEqual(Partition.parse("totals", "totals"), Option.some({ index: 0, count: 1 }))
    for (const other of ["totals-v2", "totals#3of", "totals#16of16", "totals#03of16", "totals#0of1", "totals#x", "tot", "totals#1of2#0of2"]) {
      assert.isTrue(Option.isNone(Partition.parse("totals", other)), other)
    }
    // A projection id with '#' in it still parses its own shards.
    deepStrictEqual(Partition.parse("a#b", "a#b#1of2"), Option.some({ index: 1, count: 2 }))
    const longest = Partition.unitId("x".repeat(SubscriptionId.maxLength - 11), { index: 1023, count: 1024 })
    assert.isTrue(SubscriptionId.is(longest))
  })

  it("changed refuses another recorded count; obsolete lists what a rebuild clears", () => {
    const stored = ["totals#0of4", "totals#1of4", "totals-v2", "totals#0of2", "other#0of4"]
    assert.isTrue(Option.isNone(Partition.changed("totals", 4, ["totals#0of4", "totals#3of4", "totals-v2"])))
    assert.isTrue(Option.isNone(Partition.changed("totals", 4, [])))
    const refusal = Partition.changed("totals", 4, stored)
    assert.isTrue(Option.isSome(refusal))
    if (Option.isSome(refusal)) {
      assert.deepStrictEqual(refusal.value.recorded, [2], "the other counts")
      assert.strictEqual(refusal.value.requested, 4)
      assert.strictEqual(refusal.value._tag, "PartitionsChanged")
    }
    assert.deepStrictEqual(Option.getOrThrow(Partition.changed("totals", 1, ["totals#0of4"])).recorded, [4])
    assert.deepStrictEqual(Option.getOrThrow(Partition.changed("totals", 4, ["totals"])).recorded, [1])
    assert.deepStrictEqual(Partition.obsolete("totals", 4, stored), ["totals#0of2"])
    assert.deepStrictEqual(Partition.obsolete("totals", 2, [...stored, "totals"]), ["totals#0of4", "totals#1of4", "totals"])
  })

  it("contested: another count's checkpoint always refuses; its bare live lease refuses only a count without checkpoints", () => {
    const stored = ["totals#0of4", "totals#1of4", "totals#0of2"]
    // 4 has checkpoints, 2 only a live lease (a runner of 2 checking): 4 goes on, 2 refuses.
    assert.isTrue(Option.isNone(Partition.contested("totals", 4, stored, ["totals#0of4", "totals#1of4"])))
    assert.deepStrictEqual(Option.getOrThrow(Partition.contested("totals", 2, stored, ["totals#0of4"])).recorded, [4])
    // Neither has a checkpoint (two fresh counts at once): both refuse.
    assert.deepStrictEqual(Option.getOrThrow(Partition.contested("totals", 4, stored, [])).recorded, [2])
    assert.deepStrictEqual(Option.getOrThrow(Partition.contested("totals", 2, stored, [])).recorded, [4])
    // Both have checkpoints: both refuse.
    const both = ["totals#0of4", "totals#0of2"]
    assert.isTrue(Option.isSome(Partition.contested("totals", 4, stored, both)))
    assert.isTrue(Option.isSome(Partition.contested("totals", 2, stored, both)))
    // No other count: nothing to contest.
    assert.isTrue(Option.isNone(Partition.contested("totals", 4, ["totals#0of4"], [])))
    // Unpartitioned and established, a shard of 4 leased: it goes on.
    assert.isTrue(Option.isNone(Partition.contested("totals", 1, ["totals", "totals#3of4"], ["totals"])))
  })

  it("units: one per shard, each under its id with its shard; none or one partition: the projection itself", () => {
    const handle = () => Effect.void
    const four = Projection.transactional({ subscriptionId: "totals", categories: ["order"], partitions: 4, handle })
    const units = Partition.units(four)
    assert.deepStrictEqual(
      units.map((u) => [u.subscriptionId, u.shard, u.delivery, u.categories]),
      [0, 1, 2, 3].map((index) => [`totals#${index}of4`, { projectionId: "totals", index, count: 4 }, "transactional", ["order"]])
    )
    assert.strictEqual(units[2]!.process, four.process)
    assert.strictEqual(Partition.projectionIdOf(units[2]!), "totals")
    assert.deepStrictEqual(Partition.units(units[2]!), [units[2]!], "a unit is not split again")
    const one = Projection.atLeastOnce({ subscriptionId: "totals", partitions: 1, handle })
    const none = Projection.atLeastOnce({ subscriptionId: "totals", handle })
    assert.deepStrictEqual(Partition.units(one), [one])
    assert.deepStrictEqual(Partition.units(none), [none])
    assert.strictEqual(Partition.countOf(none), 1)
  })

  it.effect("counts and shards are validated", () =>
    Effect.gen(function* () {
      for (const count of [1, 2, 1024]) assert.strictEqual(yield* Partition.validateCount(count), count)
      for (const count of [0, -2, 2.5, 1025, Number.NaN]) {
        assert.strictEqual((yield* Effect.flip(Partition.validateCount(count))).field, "partitions")
      }
      assert.isTrue(Partition.isShard({ index: 0, count: 1 }))
      assert.isFalse(Partition.isShard({ index: 1, count: 1 }))
      assert.strictEqual((yield* Effect.flip(Partition.validateShard({ index: 4, count: 4 }))).field, "shard")
    }))
})

describe("ProjectionRunner.rebuild after a store error", () => {
  it.live("a leadership that ends with a store error resumes from the shard's checkpoint: each event handled, progress complete", () =>
    Effect.gen(function* () {
      const category = `rebuildfail${Date.now()}`
      for (let s = 0; s < 4; s++) {
        for (let v = 1; v <= 10; v++) {
          yield* EventStore.append(`${category}-${s}`, category, ExpectedVersion.Any, [
            { eventType: `${category}.marked`, schemaVersion: 1, data: { v } }
          ])
        }
      }
      const store = yield* SubscriptionStore.SubscriptionStore
      // The third checkpoint write (a batch's, after the rebuild's reset) fails once, as a cancelled statement would.
      let writes = 0
      const failing: SubscriptionStore.SubscriptionStore = {
        ...store,
        writeCheckpoint: (id, checkpoint, fence) =>
          ++writes === 3
            ? Effect.fail(new StoreError({ kind: "Timeout", operation: "writeCheckpoint", cause: new Error("canceling statement due to user request") }))
            : store.writeCheckpoint(id, checkpoint, fence)
      }
      const handled = new Map<string, number>()
      const projection = Projection.atLeastOnce({
        subscriptionId: `${category}-rebuild`,
        categories: [category],
        partitions: 2,
        handle: ({ recorded }) =>
          Effect.sync(() => void handled.set(`${recorded.streamId}@${recorded.streamVersion}`, (handled.get(`${recorded.streamId}@${recorded.streamVersion}`) ?? 0) + 1))
      })
      const progress = yield* ProjectionRunner.rebuild(projection, {
        workerId: "rebuild-fail",
        batchSize: 5,
        pollInterval: "20 millis",
        leaseRecheckInterval: "20 millis"
      }).pipe(Effect.provideService(SubscriptionStore.SubscriptionStore, failing))
      assert.isTrue(writes > 3, "the failing write happened")
      assert.deepStrictEqual(progress, { done: 40, total: 40 })
      // At least once: every event handled; only the batch whose checkpoint failed may come twice.
      assert.strictEqual(handled.size, 40)
      const twice = [...handled.values()].filter((n) => n > 1).length
      assert.isTrue(twice <= 5, `${twice} events handled twice`)
    }).pipe(Effect.provide(InMemory.layer))
  )
})
