/**
 * Truncation and retention, run against every store: a truncated stream
 * keeps its snapshot as its base, `loadSnapshotted` still loads it, a plain
 * `load` refuses with `StreamTruncated`, and a refused truncation changes
 * nothing.
 *
 * @since 0.2.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as AggregateRoot from "../AggregateRoot.js"
import * as DeadLetters from "../DeadLetters.js"
import * as EventStore from "../EventStore.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import type { StoreError } from "../EventStoreError.js"
import * as StreamId from "../StreamId.js"
import * as Subscription from "../Subscription.js"
import type * as SubscriptionStore from "../SubscriptionStore.js"
import { account, type AccountEvent, type AccountState, Deposited, Opened, type Raw, unique } from "./fixtures.js"
import { collectUntil, perStreamOrdered } from "./scopes.js"

/** Saves `count` deposits of 1 on a root (one save: at most one snapshot). */
const deposit = (root: AggregateRoot.AggregateRoot<AccountState, AccountEvent>, count: number) => {
  let next = root
  for (let i = 0; i < count; i++) next = AggregateRoot.record(next, Deposited.make({ amount: 1 }))
  return EventStore.saveSnapshotting(next)
}

/** A stream of `Account` at `version` with its snapshot at `snapshotAt` (0: none), written by saves. */
const streamWith = (Account: ReturnType<typeof account>, id: string, snapshotAt: number, version: number) =>
  Effect.gen(function* () {
    const opened = AggregateRoot.record(AggregateRoot.make(Account, id), Opened.make({ owner: id }))
    // Up to the snapshot in one save (the policy snapshots every `snapshotAt`), then the rest one by one.
    let root = snapshotAt > 0 ? yield* deposit(opened, snapshotAt - 1) : yield* EventStore.save(opened)
    while (root.version < version) root = yield* EventStore.save(AggregateRoot.record(root, Deposited.make({ amount: 1 })))
    return root
  })

/** The fixtures' aggregates write snapshots of snapshot version 1. */
const v1 = { snapshotVersion: 1 } as const

const versions = (streamId: string) =>
  Effect.map(Stream.runCollect(EventStore.readStream(streamId)), (events) =>
    Chunk.toReadonlyArray(events).map((e) => e.streamVersion)
  )

/**
 * Registers the retention suite: `EventStore.truncate` and
 * `EventStore.applyRetention` on the store under test.
 *
 * @since 0.2.0
 * @category suites
 */
export const retentionSuite = (name: string, storeLayer: Layer.Layer<EventStore.EventStore | Raw>) =>
  describe(`truncation and retention: ${name}`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("truncate keeps the snapshot as the base: loadSnapshotted loads, load refuses, reads start at the cut", () =>
        Effect.gen(function* () {
          const Account = account(unique("tr"), 5)
          const streamId = `${Account.category}-1`
          const root = yield* streamWith(Account, "1", 5, 8)
          assert.strictEqual(root.version, 8)
          const full = Option.getOrThrow(yield* EventStore.load(Account, "1"))

          // Past the snapshot (at 5): refused, nothing removed.
          const refused = yield* Effect.flip(EventStore.truncate(streamId, 6, v1))
          assert.strictEqual(refused._tag, "SnapshotRequired")
          if (refused._tag === "SnapshotRequired") assert.strictEqual(refused.snapshotVersion, 5)
          assert.deepStrictEqual(yield* versions(streamId), [1, 2, 3, 4, 5, 6, 7, 8])

          const cut = yield* EventStore.truncate(streamId, 5, v1)
          assert.deepStrictEqual(cut, { streamId, truncatedBefore: 5, removed: 4 })
          assert.deepStrictEqual(yield* versions(streamId), [5, 6, 7, 8])
          const category = yield* Stream.runCollect(EventStore.readCategory(Account.category))
          assert.deepStrictEqual(Chunk.toReadonlyArray(category).map((e) => e.streamVersion), [5, 6, 7, 8])

          const snapped = Option.getOrThrow(yield* EventStore.loadSnapshotted(Account, "1"))
          assert.deepStrictEqual(snapped.state, full.state)
          assert.strictEqual(snapped.version, 8)
          const plain = yield* Effect.flip(EventStore.load(Account, "1"))
          assert.strictEqual(plain._tag, "StreamTruncated")
          if (plain._tag === "StreamTruncated") assert.strictEqual(plain.truncatedBefore, 5)

          // No further than before: nothing to do.
          assert.deepStrictEqual(yield* EventStore.truncate(streamId, 3, v1), { streamId, truncatedBefore: 5, removed: 0 })

          // The stream lives on: a save after the cut, then a snapshotted load of it.
          const saved = yield* EventStore.save(AggregateRoot.record(snapped, Deposited.make({ amount: 10 })))
          assert.strictEqual(saved.version, 9)
          const again = Option.getOrThrow(yield* EventStore.loadSnapshotted(Account, "1"))
          assert.strictEqual(again.version, 9)
          assert.strictEqual(again.state.balance, full.state.balance + 10)
        }))

      it.effect("a truncation is refused (changing nothing) without a snapshot, past the stream, for a missing stream, or bad input", () =>
        Effect.gen(function* () {
          const Account = account(unique("tn"), 0)
          const streamId = `${Account.category}-1`
          yield* streamWith(Account, "1", 0, 4)
          const noSnapshot = yield* Effect.flip(EventStore.truncate(streamId, 2, v1))
          assert.strictEqual(noSnapshot._tag, "SnapshotRequired")
          if (noSnapshot._tag === "SnapshotRequired") assert.isNull(noSnapshot.snapshotVersion)
          const past = yield* Effect.flip(EventStore.truncate(streamId, 5, v1))
          assert.strictEqual(past._tag, "InvalidInput")
          assert.strictEqual((yield* Effect.flip(EventStore.truncate(`${Account.category}-nobody`, 2, v1)))._tag, "StreamNotFound")
          for (const before of [0, -1, 1.5, Number.NaN]) {
            const bad = yield* Effect.flip(EventStore.truncate(streamId, before, v1))
            assert.strictEqual(bad._tag, "InvalidInput", String(before))
          }
          assert.strictEqual((yield* Effect.flip(EventStore.truncate("", 2, v1)))._tag, "InvalidInput")
          assert.deepStrictEqual(yield* versions(streamId), [1, 2, 3, 4])
          // Before version 1 would remove nothing; it is the start of every stream.
          assert.deepStrictEqual(yield* EventStore.truncate(streamId, 1, v1), { streamId, truncatedBefore: 1, removed: 0 })
          const loaded = Option.getOrThrow(yield* EventStore.load(Account, "1"))
          assert.strictEqual(loaded.version, 4)
        }))

      it.effect("snapshot writes one now, whatever the policy, so truncate can go up to the current version", () =>
        Effect.gen(function* () {
          const Account = account(unique("sn"), 100)
          const streamId = `${Account.category}-1`
          yield* streamWith(Account, "1", 0, 7)
          assert.strictEqual((yield* Effect.flip(EventStore.truncate(streamId, 7, v1)))._tag, "SnapshotRequired")
          assert.deepStrictEqual(yield* EventStore.snapshot(Account, "1"), Option.some(7))
          assert.deepStrictEqual(yield* EventStore.truncate(streamId, 7, v1), { streamId, truncatedBefore: 7, removed: 6 })
          const loaded = Option.getOrThrow(yield* EventStore.loadSnapshotted(Account, "1"))
          assert.strictEqual(loaded.version, 7)
          assert.strictEqual(loaded.state.events, 7)
          assert.deepStrictEqual(yield* EventStore.snapshot(Account, "nobody"), Option.none())
          const plain = account(Account.category, 0)
          assert.strictEqual((yield* Effect.flip(EventStore.snapshot(plain, "1")))._tag, "InvalidInput")
        }))

      it.effect("a deleted stream cannot be truncated, and retention leaves it out", () =>
        Effect.gen(function* () {
          const Account = account(unique("td"), 2)
          const streamId = `${Account.category}-1`
          yield* streamWith(Account, "1", 2, 3)
          yield* EventStore.deleteStream(streamId)
          const refused = yield* Effect.flip(EventStore.truncate(streamId, 2, v1))
          assert.strictEqual(refused._tag, "StreamDeleted")
          const ids = yield* Stream.runCollect(EventStore.streamIds(Account.category))
          assert.deepStrictEqual(Chunk.toReadonlyArray(ids), [])
          const report = yield* EventStore.applyRetention(Account.category, { maxCount: 1 }, v1)
          assert.strictEqual(report.streams, 0)
        }))

      it.effect("retention by count: never past the newest snapshot, nothing without one; a dry run removes nothing", () =>
        Effect.gen(function* () {
          const Big = account(unique("rc"), 10)
          const Small = account(Big.category, 5)
          const Bare = account(Big.category, 0)
          yield* streamWith(Big, "a", 10, 12) // keeps 10..12: cut at 10 (the snapshot)
          yield* streamWith(Bare, "b", 0, 4) // would keep 2..4: no snapshot, skipped
          yield* streamWith(Small, "c", 5, 9) // would keep 7..9: stopped at the snapshot, 5
          yield* streamWith(Big, "d", 0, 2) // keeps everything
          const ids = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.streamIds(Big.category)))
          assert.deepStrictEqual(ids, ["a", "b", "c", "d"].map((id) => `${Big.category}-${id}`))

          const expected = {
            streams: 4,
            truncated: 2,
            eventsRemoved: 9 + 4,
            limitedBySnapshot: 1,
            limitedByDeadLetters: 0,
            skippedNoSnapshot: 1,
            skippedSample: [`${Big.category}-b`]
          }
          const dry = yield* EventStore.applyRetention(Big.category, { maxCount: 3 }, { ...v1, dryRun: true })
          assert.deepStrictEqual(dry, { dryRun: true, ...expected })
          assert.deepStrictEqual(yield* versions(`${Big.category}-a`), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])

          const report = yield* EventStore.applyRetention(Big.category, { maxCount: 3 }, v1)
          assert.deepStrictEqual(report, { dryRun: false, ...expected })
          assert.deepStrictEqual(yield* versions(`${Big.category}-a`), [10, 11, 12])
          assert.deepStrictEqual(yield* versions(`${Big.category}-b`), [1, 2, 3, 4])
          assert.deepStrictEqual(yield* versions(`${Big.category}-c`), [5, 6, 7, 8, 9])
          assert.deepStrictEqual(yield* versions(`${Big.category}-d`), [1, 2])
          assert.strictEqual(Option.getOrThrow(yield* EventStore.loadSnapshotted(Big, "a")).state.events, 12)
          assert.strictEqual(Option.getOrThrow(yield* EventStore.loadSnapshotted(Small, "c")).state.events, 9)

          // Applied again: nothing left to remove.
          const again = yield* EventStore.applyRetention(Big.category, { maxCount: 3 }, v1)
          assert.strictEqual(again.eventsRemoved, 0)
          assert.strictEqual(again.truncated, 0)
          // c would go further, to 7, but has no snapshot past its base (5): skipped until it gets one.
          assert.strictEqual(again.skippedNoSnapshot, 2)
          const one = yield* EventStore.retain(`${Big.category}-c`, { maxCount: 3 }, v1)
          assert.deepStrictEqual(one, { streamId: `${Big.category}-c`, decision: { _tag: "NoSnapshot", wanted: 7 }, removed: 0 })
          const kept = yield* EventStore.retain(`${Big.category}-a`, { maxCount: 3 }, v1)
          assert.deepStrictEqual(kept, { streamId: `${Big.category}-a`, decision: { _tag: "Keep" }, removed: 0 })
        }))

      it.effect("retention by age: events younger than maxAge stay, older ones go up to the snapshot", () =>
        Effect.gen(function* () {
          const Account = account(unique("ra"), 4)
          const streamId = `${Account.category}-1`
          yield* streamWith(Account, "1", 4, 6)
          const young = yield* EventStore.applyRetention(Account.category, { maxAge: "1 day" }, v1)
          assert.strictEqual(young.eventsRemoved, 0)
          assert.deepStrictEqual(yield* versions(streamId), [1, 2, 3, 4, 5, 6])
          // Every event is older than 0 ms once the clock has moved past its commit: polled, not slept.
          const report = yield* EventStore.applyRetention(Account.category, { maxAge: 0 }, v1).pipe(
            Effect.filterOrFail((r) => r.eventsRemoved > 0, () => "nothing old enough yet"),
            Effect.retry(Schedule.spaced("10 millis").pipe(Schedule.upTo("10 seconds")))
          )
          assert.strictEqual(report.eventsRemoved, 3)
          assert.strictEqual(report.limitedBySnapshot, 1)
          assert.deepStrictEqual(yield* versions(streamId), [4, 5, 6])
          assert.strictEqual(Option.getOrThrow(yield* EventStore.loadSnapshotted(Account, "1")).version, 6)
        }))

      it.effect("a snapshot of another snapshot version is no base: truncate refuses, retention skips (a version bump)", () =>
        Effect.gen(function* () {
          // The stored snapshot (at v5) is of snapshot version 1; the aggregate now reads version 2.
          const Account = account(unique("tv"), 5)
          const streamId = `${Account.category}-1`
          yield* streamWith(Account, "1", 5, 8)
          const v2 = { snapshotVersion: 2 }
          const refused = yield* Effect.flip(EventStore.truncate(streamId, 5, v2))
          assert.strictEqual(refused._tag, "SnapshotRequired")
          if (refused._tag === "SnapshotRequired") {
            assert.strictEqual(refused.snapshotVersion, 5)
            assert.deepStrictEqual(refused.unusable, { schemaVersion: 1, expected: 2 })
          }
          assert.strictEqual((yield* Effect.flip(EventStore.truncate(streamId, 5, { ...v2, dryRun: true })))._tag, "SnapshotRequired")
          const report = yield* EventStore.applyRetention(Account.category, { maxCount: 1 }, v2)
          assert.strictEqual(report.eventsRemoved, 0)
          assert.strictEqual(report.skippedNoSnapshot, 1)
          const one = yield* EventStore.retain(streamId, { maxCount: 1 }, v2)
          assert.deepStrictEqual(one.decision, { _tag: "NoSnapshot", wanted: 8 })
          assert.deepStrictEqual(yield* versions(streamId), [1, 2, 3, 4, 5, 6, 7, 8])
          // An aggregate without a snapshot definition, or a version that is not an integer: bad input.
          const Plain = account(Account.category, 0)
          assert.strictEqual((yield* Effect.flip(EventStore.truncate(streamId, 5, { snapshotVersion: Plain })))._tag, "InvalidInput")
          assert.strictEqual((yield* Effect.flip(EventStore.truncate(streamId, 5, { snapshotVersion: 1.5 })))._tag, "InvalidInput")
          // The aggregate itself (its snapshot version, 1) can cut to it.
          assert.strictEqual((yield* EventStore.truncate(streamId, 5, { snapshotVersion: Account })).removed, 4)
          assert.strictEqual(Option.getOrThrow(yield* EventStore.loadSnapshotted(Account, "1")).state.events, 8)
        }))

      it.effect("a dry run of truncate says what would go, refuses as the real one, and changes nothing", () =>
        Effect.gen(function* () {
          const Account = account(unique("tw"), 5)
          const streamId = `${Account.category}-1`
          yield* streamWith(Account, "1", 5, 8)
          const dry = { ...v1, dryRun: true }
          assert.deepStrictEqual(yield* EventStore.truncate(streamId, 5, dry), { streamId, truncatedBefore: 5, removed: 4 })
          assert.strictEqual((yield* Effect.flip(EventStore.truncate(streamId, 6, dry)))._tag, "SnapshotRequired")
          assert.strictEqual((yield* Effect.flip(EventStore.truncate(`${streamId}x`, 2, dry)))._tag, "StreamNotFound")
          assert.deepStrictEqual(yield* versions(streamId), [1, 2, 3, 4, 5, 6, 7, 8])
          const extent = Option.getOrThrow(yield* EventStore.streamExtent(streamId))
          assert.deepStrictEqual(
            [extent.version, extent.truncatedBefore, extent.snapshotVersion, extent.snapshotSchemaVersion, extent.deadLetterFrom],
            [8, 1, 5, 1, null]
          )
        }))

      it.effect("a bad policy or category is InvalidInput and changes nothing", () =>
        Effect.gen(function* () {
          const Account = account(unique("rb"), 2)
          const streamId = `${Account.category}-1`
          yield* streamWith(Account, "1", 2, 3)
          for (const policy of [{}, { maxCount: 0 }, { maxCount: 1.5 }, { maxAge: Number.POSITIVE_INFINITY }]) {
            const bad = yield* Effect.flip(EventStore.applyRetention(Account.category, policy, v1))
            assert.strictEqual(bad._tag, "InvalidInput", JSON.stringify(policy))
          }
          assert.strictEqual((yield* Effect.flip(EventStore.applyRetention("", { maxCount: 1 }, v1)))._tag, "InvalidInput")
          assert.deepStrictEqual(yield* versions(streamId), [1, 2, 3])
        }))
    })
  })

/**
 * Registers the subscription part of the retention suite: a subscription
 * behind a truncation delivers what is left of the stream, in order, and
 * does not stall on the removed versions.
 *
 * @since 0.2.0
 * @category suites
 */
export const truncationSubscriptionSuite = (
  name: string,
  storeLayer: Layer.Layer<EventStore.EventStore | SubscriptionStore.SubscriptionStore>
) =>
  describe(`truncation and subscriptions: ${name}`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.scoped("a subscription behind a truncation delivers the rest and moves on", () =>
        Effect.gen(function* () {
          const Account = account(unique("ts"), 5)
          const subscription = yield* Subscription.make({
            subscriptionId: unique("trunc-sub-"),
            categories: [Account.category],
            batchSize: 3
          })
          yield* streamWith(Account, "1", 5, 8)
          yield* streamWith(Account, "2", 0, 2)
          assert.strictEqual((yield* EventStore.truncate(`${Account.category}-1`, 5, v1)).removed, 4)
          const got = yield* collectUntil(subscription, (events) => events.length >= 6)
          assert.isTrue(perStreamOrdered(got))
          assert.deepStrictEqual(
            got.filter((e) => e.streamId === `${Account.category}-1`).map((e) => e.streamVersion),
            [5, 6, 7, 8]
          )
          assert.deepStrictEqual(
            got.filter((e) => e.streamId === `${Account.category}-2`).map((e) => e.streamVersion),
            [1, 2]
          )
          // And it goes on: a later append arrives.
          yield* streamWith(Account, "3", 0, 1)
          const later = yield* collectUntil(subscription, (events) => events.length >= 1)
          assert.deepStrictEqual(
            later.map((e) => [e.streamId, e.streamVersion]),
            [[`${Account.category}-3`, 1]]
          )
        }))
    })
  })

/**
 * Registers the dead-letter part of the retention suite: truncation and
 * retention never remove an event a projection has dead-lettered (failed or
 * parked) before it is retried or discarded.
 *
 * @since 0.2.0
 * @category suites
 */
export const truncationDeadLetterSuite = (
  name: string,
  storeLayer: Layer.Layer<EventStore.EventStore | DeadLetters.DeadLetterStore>
) =>
  describe(`truncation and dead letters: ${name}`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("never past a stream's lowest dead letter: truncate refuses, retention stops there", () =>
        Effect.gen(function* () {
          const Account = account(unique("tl"), 6)
          const streamId = `${Account.category}-1`
          yield* streamWith(Account, "1", 6, 8)
          const events = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readStream(streamId)))
          const letters = yield* DeadLetters.DeadLetterStore
          const subscriptionId = unique("dl-sub-")
          // v3 failed in a projection, v4 parked behind it.
          yield* letters.record(subscriptionId, [DeadLetters.failed(events[2]!, "boom", 1), DeadLetters.parked(events[3]!)])

          const refused = yield* Effect.flip(EventStore.truncate(streamId, 6, v1))
          assert.strictEqual(refused._tag, "DeadLetterPending")
          if (refused._tag === "DeadLetterPending") assert.strictEqual(refused.deadLetterVersion, 3)
          assert.deepStrictEqual(yield* versions(streamId), [1, 2, 3, 4, 5, 6, 7, 8])

          // Retention cuts up to the dead letter (its event stays), then no further.
          const report = yield* EventStore.applyRetention(Account.category, { maxCount: 1 }, v1)
          assert.strictEqual(report.eventsRemoved, 2)
          assert.strictEqual(report.limitedByDeadLetters, 1)
          assert.deepStrictEqual(yield* versions(streamId), [3, 4, 5, 6, 7, 8])
          const again = yield* EventStore.retain(streamId, { maxCount: 1 }, v1)
          assert.deepStrictEqual(again.decision, { _tag: "DeadLettered", wanted: 8, deadLetterFrom: 3 })
          assert.strictEqual(again.removed, 0)

          // Once the letters are dealt with, the cut goes on to the snapshot.
          yield* letters.discard({ _tag: "All", subscriptionId })
          assert.deepStrictEqual(yield* EventStore.truncate(streamId, 6, v1), { streamId, truncatedBefore: 6, removed: 3 })
        }))
    })
  })

/** `count` deposits after an opening, appended in batches of 500 (a long stream, quickly). */
const longStream = (store: EventStore.EventStore, Account: ReturnType<typeof account>, id: string, count: number) =>
  Effect.gen(function* () {
    const streamId = `${Account.category}-${id}`
    let written = 0
    while (written < count) {
      const n = Math.min(500, count - written)
      const batch = written === 0 ? [Opened.make({ owner: id }), ...Array.from({ length: n - 1 }, () => Deposited.make({ amount: 1 }))] : Array.from({ length: n }, () => Deposited.make({ amount: 1 }))
      const encoded = yield* Account.codec.encodeAll(batch)
      yield* store.append(streamId, Account.category, ExpectedVersion.Any, encoded)
      written += n
    }
    return streamId
  })

/**
 * Registers the storage-level part of the retention suite, over a store's
 * `Storage` primitives (wrapped by the tests to watch or interleave): a
 * truncation removes at most `Retention.chunkSize` events per transaction,
 * a paged load overtaken by a truncation fails with `StreamTruncated`, and
 * a snapshot is never written below a stream's base.
 *
 * @since 0.2.0
 * @category suites
 */
export const truncationStorageSuite = <R>(
  name: string,
  makeStorage: Effect.Effect<EventStore.Storage, never, R | Scope.Scope>,
  storeLayer: Layer.Layer<R>
) =>
  describe(`truncation storage: ${name}`, () => {
    layer(storeLayer, { timeout: "180 seconds", excludeTestServices: true })((it) => {
      it.scoped("truncate and retention remove a long prefix in steps of at most Retention.chunkSize versions", () =>
        Effect.gen(function* () {
          const storage = yield* makeStorage
          const steps: Array<number> = []
          const store = EventStore.make({
            ...storage,
            removeBefore: (id, before) => Effect.zipRight(Effect.sync(() => void steps.push(before)), storage.removeBefore(id, before))
          })
          const Account = account(unique("tk"), 100_000)
          for (const id of ["a", "b"]) {
            yield* longStream(store, Account, id, 2400)
            assert.deepStrictEqual(yield* store.snapshot(Account, id), Option.some(2400))
          }
          yield* store.append(`${Account.category}-a`, Account.category, ExpectedVersion.Any, yield* Account.codec.encodeAll([Deposited.make({ amount: 1 })]))

          const cut = yield* store.truncate(`${Account.category}-a`, 2400, { snapshotVersion: Account })
          assert.deepStrictEqual(cut, { streamId: `${Account.category}-a`, truncatedBefore: 2400, removed: 2399 })
          assert.deepStrictEqual(steps, [1001, 2001, 2400])
          const loaded = Option.getOrThrow(yield* store.loadSnapshotted(Account, "a"))
          assert.deepStrictEqual([loaded.version, loaded.state.events], [2401, 2401])

          steps.length = 0
          const kept = yield* store.retain(`${Account.category}-b`, { maxCount: 1 }, { snapshotVersion: Account })
          assert.deepStrictEqual(kept.decision, { _tag: "Truncate", before: 2400, wanted: 2400, limitedBy: null })
          assert.strictEqual(kept.removed, 2399)
          assert.deepStrictEqual(steps, [1001, 2001, 2400])
          const first = yield* Stream.runHead(store.readStream(`${Account.category}-b`))
          assert.strictEqual(Option.getOrThrow(first).streamVersion, 2400)
        }))

      it.scoped("a paged load that a truncation overtakes between two pages fails with StreamTruncated, not StreamCorrupt", () =>
        Effect.gen(function* () {
          const storage = yield* makeStorage
          const Account = account(unique("tp"), 0)
          const plain = EventStore.make(storage)
          const streamId = yield* longStream(plain, Account, "1", 10_005)
          let raced = false
          // Before the second page is read, a truncation to v10,003 commits (as another process's would).
          const race = <A>(read: (id: StreamId.StreamId, from: number, limit: number) => Effect.Effect<A, StoreError>) =>
            (id: StreamId.StreamId, from: number, limit: number) =>
              from > 1 && !raced
                ? Effect.zipRight(
                    Effect.zipRight(Effect.sync(() => { raced = true }), storage.transaction(storage.removeBefore(id, 10_003))),
                    read(id, from, limit)
                  )
                : read(id, from, limit)
          const store = EventStore.make({
            ...storage,
            loadPage: race(storage.loadPage),
            ...(storage.loadFoldPage === undefined ? {} : { loadFoldPage: race(storage.loadFoldPage) })
          })
          const failed = yield* Effect.flip(store.load(Account, "1"))
          assert.isTrue(raced)
          assert.strictEqual(failed._tag, "StreamTruncated")
          if (failed._tag === "StreamTruncated") assert.strictEqual(failed.truncatedBefore, 10_003)
          assert.strictEqual(streamId, `${Account.category}-1`)
        }))

      it.scoped("a snapshot below a stream's base is never written (its anchor is gone); one at or above it is", () =>
        Effect.gen(function* () {
          const storage = yield* makeStorage
          const store = EventStore.make(storage)
          const Account = account(unique("tb"), 5)
          const streamId = `${Account.category}-1`
          yield* store.save(AggregateRoot.record(AggregateRoot.make(Account, "1"), Opened.make({ owner: "o" })))
          const encoded = yield* Account.codec.encodeAll(Array.from({ length: 7 }, () => Deposited.make({ amount: 1 })))
          yield* store.append(streamId, Account.category, ExpectedVersion.Any, encoded)
          assert.deepStrictEqual(yield* store.snapshot(Account, "1"), Option.some(8))
          assert.strictEqual((yield* store.truncate(streamId, 8, v1)).removed, 7)
          const state = { owner: "o", balance: 2, open: true, events: 3 }
          const stale = { streamId, streamVersion: 3, snapshotVersion: 2, state, stateJson: JSON.stringify(state) }
          // A process still on another snapshot version writes one it folded before the truncation.
          yield* storage.writeSnapshot(stale)
          const kept = Option.getOrThrow(yield* storage.readSnapshot(StreamId.fromStored(streamId)))
          assert.deepStrictEqual([kept.streamVersion, kept.snapshotVersion], [8, 1])
          yield* storage.writeSnapshot({ ...stale, streamVersion: 8 })
          const replaced = Option.getOrThrow(yield* storage.readSnapshot(StreamId.fromStored(streamId)))
          assert.deepStrictEqual([replaced.streamVersion, replaced.snapshotVersion], [8, 2])
        }))
    })
  })
