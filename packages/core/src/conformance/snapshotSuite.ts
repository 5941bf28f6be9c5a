/**
 * Snapshots, run against every store.
 *
 * @since 0.1.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as fc from "effect/FastCheck"
import * as AggregateRoot from "../AggregateRoot.js"
import * as EventStore from "../EventStore.js"
import * as Metrics from "../Metrics.js"
import { account, type AccountEvent, Deposited, Opened, Raw, unique, Withdrawn } from "./fixtures.js"

const eventArb: fc.Arbitrary<AccountEvent> = fc.oneof(
  fc.integer({ min: 1, max: 1000 }).map((amount) => Deposited.make({ amount })),
  fc.integer({ min: 1, max: 1000 }).map((amount) => Withdrawn.make({ amount }))
)

/**
 * Registers the snapshot suite: a snapshot is used when valid, ignored when
 * stale or corrupt, and a snapshotted load equals the full fold.
 *
 * @since 0.1.0
 * @category suites
 */
export const snapshotSuite = (name: string, storeLayer: Layer.Layer<EventStore.EventStore | Raw>) =>
  describe(`snapshots: ${name}`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("property: loadSnapshotted equals the full fold, for random events, chunks and policies", () =>
        Effect.gen(function* () {
          const context = yield* Effect.context<EventStore.EventStore>()
          const property = fc.asyncProperty(
            fc.integer({ min: 1, max: 12 }),
            fc.array(fc.array(eventArb, { minLength: 1, maxLength: 9 }), { minLength: 1, maxLength: 8 }),
            (every, chunks) =>
              Effect.gen(function* () {
                const Account = account(unique("snp"), every)
                let root = AggregateRoot.record(AggregateRoot.make(Account, "1"), Opened.make({ owner: "p" }))
                for (const chunk of chunks) {
                  root = yield* EventStore.saveSnapshotting(AggregateRoot.record(root, ...chunk))
                  const full = Option.getOrThrow(yield* EventStore.load(Account, "1"))
                  const snapped = Option.getOrThrow(yield* EventStore.loadSnapshotted(Account, "1"))
                  assert.deepStrictEqual(snapped.state, full.state)
                  assert.strictEqual(snapped.version, full.version)
                  assert.deepStrictEqual(snapped.state, root.state)
                }
              }).pipe(Effect.provide(context), Effect.runPromise)
          )
          yield* Effect.promise(() => fc.assert(property, { numRuns: 25 }))
        }))

      it.effect("a snapshot is used when valid: only the events after it are read", () =>
        Effect.gen(function* () {
          const raw = yield* Raw
          const Account = account(unique("sn"), 10)
          let root = AggregateRoot.make(Account, "1")
          root = AggregateRoot.record(root, Opened.make({ owner: "o" }))
          for (let i = 0; i < 24; i++) root = AggregateRoot.record(root, Deposited.make({ amount: 1 }))
          root = yield* EventStore.saveSnapshotting(root)
          assert.strictEqual(root.version, 25)
          const hits = (yield* Metric.value(Metrics.snapshotHits)).count
          // A snapshot whose state lies proves it is used: the fold continues from it.
          yield* raw.setSnapshot(`${Account.category}-1`, 20, 1, { owner: "o", balance: 1000, open: true, events: 20 })
          const snapped = Option.getOrThrow(yield* EventStore.loadSnapshotted(Account, "1"))
          assert.strictEqual(snapped.state.balance, 1005)
          assert.strictEqual(snapped.version, 25)
          assert.strictEqual((yield* Metric.value(Metrics.snapshotHits)).count, hits + 1)
        }))

      it.effect("old-version, undecodable and beyond-the-stream snapshots are ignored: full replay", () =>
        Effect.gen(function* () {
          const raw = yield* Raw
          const Account = account(unique("si"), 5)
          let root = AggregateRoot.record(AggregateRoot.make(Account, "1"), Opened.make({ owner: "o" }))
          for (let i = 0; i < 9; i++) root = AggregateRoot.record(root, Deposited.make({ amount: 2 }))
          root = yield* EventStore.saveSnapshotting(root)
          const expected = { owner: "o", balance: 18, open: true, events: 10 }
          const streamId = `${Account.category}-1`
          const cases: ReadonlyArray<readonly [string, number, number, unknown]> = [
            ["old-version", 5, 0, { owner: "o", balance: 999, open: true, events: 5 }],
            ["undecodable", 5, 1, { owner: 42 }],
            ["beyond-stream", 50, 1, { owner: "o", balance: 999, open: true, events: 50 }]
          ]
          for (const [reason, streamVersion, snapshotVersion, state] of cases) {
            const before = (yield* Metric.value(Metric.tagged(Metrics.snapshotInvalidations, "reason", reason))).count
            yield* raw.setSnapshot(streamId, streamVersion, snapshotVersion, state)
            const loaded = Option.getOrThrow(yield* EventStore.loadSnapshotted(Account, "1"))
            assert.deepStrictEqual(loaded.state, expected, reason)
            assert.strictEqual(loaded.version, 10)
            const after = (yield* Metric.value(Metric.tagged(Metrics.snapshotInvalidations, "reason", reason))).count
            assert.strictEqual(after, before + 1, reason)
          }
          const missing = yield* EventStore.loadSnapshotted(Account, "nobody")
          assert.isTrue(Option.isNone(missing))
        }))
    })
  })
