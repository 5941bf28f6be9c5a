/**
 * Partitioned projections, run against every store: the shard filter splits
 * a category (or the whole log) by stream, each event into exactly one
 * shard and every stream whole and in order; a partitioned projection runs
 * one unit per shard; a changed partition count is refused until a rebuild.
 *
 * @since 0.2.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as EventStore from "../EventStore.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import * as Lease from "../Lease.js"
import * as LeaseStore from "../LeaseStore.js"
import * as Partition from "../Partition.js"
import * as Projection from "../Projection.js"
import * as ProjectionRunner from "../ProjectionRunner.js"
import type { NewEvent, RecordedEvent } from "../RecordedEvent.js"
import * as Subscription from "../Subscription.js"
import * as SubscriptionStore from "../SubscriptionStore.js"
import { TxReadModel, unique } from "./fixtures.js"
import { waitUntil } from "./scopes.js"

type Env = EventStore.EventStore | SubscriptionStore.SubscriptionStore | LeaseStore.LeaseStore | TxReadModel

const ev = (version: number): NewEvent => ({ eventType: "part.marked", schemaVersion: 1, data: { version } })

const range = (n: number): ReadonlyArray<number> => Array.from({ length: n }, (_, i) => i)

/**
 * Appends `versions` events to each of `streams` streams of `category`,
 * round by round, so every stream's versions interleave with the others' in
 * the log.
 */
const appendRounds = (category: string, streams: number, versions: number, from = 0) =>
  Effect.forEach(
    range(versions),
    (r) =>
      Effect.forEach(
        range(streams),
        (s) =>
          EventStore.append(
            `${category}-s${s}`,
            category,
            from + r === 0 ? ExpectedVersion.NoStream : ExpectedVersion.Exact(from + r),
            [ev(from + r + 1)]
          ),
        { discard: true }
      ),
    { discard: true }
  )

/** Each stream's versions in the order they came, per shard (or handler). */
const versionsByStream = (events: ReadonlyArray<RecordedEvent>): Map<string, Array<number>> => {
  const out = new Map<string, Array<number>>()
  for (const e of events) {
    const versions = out.get(e.streamId) ?? []
    versions.push(e.streamVersion)
    out.set(e.streamId, versions)
  }
  return out
}

const ascendingFromOne = (versions: ReadonlyArray<number>): boolean => versions.every((v, i) => v === i + 1)

/**
 * The events of `categories` read by each of `count` shard subscriptions (of
 * `filter`), polled until `expected` of them arrived, then once more.
 */
const drainShards = (filter: Subscription.Filter, categories: ReadonlyArray<string>, count: number, expected: number) =>
  Effect.gen(function* () {
    const prefix = unique("sub-shard-")
    const subs = yield* Effect.forEach(range(count), (index) =>
      Subscription.make({ subscriptionId: `${prefix}-${index}`, ...filter, shard: { index, count }, batchSize: 7 })
    )
    const got: Array<Array<RecordedEvent>> = subs.map(() => [])
    const pollAll = Effect.forEach(subs, (sub, i) =>
      Effect.map(sub.poll, (events) => {
        got[i]!.push(...events.filter((e) => categories.includes(e.category)))
      })
    )
    const total = () => got.reduce((n, events) => n + events.length, 0)
    yield* waitUntil(Effect.as(pollAll, undefined).pipe(Effect.map(() => total() >= expected)), "every shard drained")
    yield* pollAll
    return { got, subs }
  })

/** Every event of the category in exactly one shard; every stream in one shard, whole and in order. */
const assertPartitioned = (got: ReadonlyArray<ReadonlyArray<RecordedEvent>>, streams: number, versions: number) => {
  const ids = got.flatMap((events) => events.map((e) => e.eventId))
  assert.strictEqual(ids.length, streams * versions, "every event read once")
  assert.strictEqual(new Set(ids).size, ids.length, "no event in two shards")
  const shardOfStream = new Map<string, number>()
  got.forEach((events, shard) => {
    for (const [streamId, vs] of versionsByStream(events)) {
      assert.isFalse(shardOfStream.has(streamId), `${streamId} in one shard only`)
      shardOfStream.set(streamId, shard)
      assert.isTrue(ascendingFromOne(vs), `${streamId}: versions in order, none missing (${vs.join(",")})`)
      assert.strictEqual(vs.length, versions)
    }
  })
  assert.strictEqual(shardOfStream.size, streams)
  assert.isAtLeast(got.filter((events) => events.length > 0).length, 2, "the streams are spread over several shards")
}

const fast = { pollInterval: "50 millis", leaseTtl: "1 second", leaseRecheckInterval: "200 millis", batchSize: 10 } as const

/** A runner in its own scope, stopped by `stop` (which releases its leases). */
const startRunner = <R, E>(projections: ReadonlyArray<Projection.Projection<R, E>>, workerId: string) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const runner = yield* ProjectionRunner.run(projections, { ...fast, workerId }).pipe(Scope.extend(scope))
    return { runner, stop: Scope.close(scope, Exit.void) }
  })

/**
 * Registers the partition suite.
 *
 * @since 0.2.0
 * @category suites
 */
export const partitionSuite = (name: string, storeLayer: Layer.Layer<Env>) =>
  describe(`partitions: ${name}`, () => {
    layer(storeLayer, { timeout: "240 seconds", excludeTestServices: true })((it) => {
      it.scoped("shards of two categories: each event in exactly one shard, every stream whole and in order", () =>
        Effect.gen(function* () {
          const a = unique("parta")
          const b = unique("partb")
          yield* appendRounds(a, 12, 4)
          yield* appendRounds(b, 12, 4)
          const filter = { categories: [a, b] }
          const store = yield* SubscriptionStore.SubscriptionStore
          // The shards' lags add up to the categories' events.
          let lag = 0
          for (const index of range(4)) {
            lag += (yield* store.lag({ ...filter, shard: { index, count: 4 } }, { transactionId: 0n, position: 0n })).events
          }
          assert.strictEqual(lag, 2 * 12 * 4)
          const { got, subs } = yield* drainShards(filter, [a, b], 4, 2 * 12 * 4)
          for (const category of [a, b]) {
            assertPartitioned(
              got.map((events) => events.filter((e) => e.category === category)),
              12,
              4
            )
          }
          for (const sub of subs) assert.strictEqual((yield* sub.lag).events, 0, "a drained shard has no lag")
        }))

      it.scoped("shards of the whole log: each event in exactly one shard, every stream whole and in order", () =>
        Effect.gen(function* () {
          const category = unique("partall")
          yield* appendRounds(category, 15, 3)
          const { got } = yield* drainShards({}, [category], 3, 15 * 3)
          assertPartitioned(got, 15, 3)
        }))

      it.scoped("a checkpointed shard resumes where it stopped, reading only its own streams", () =>
        Effect.gen(function* () {
          const category = unique("partresume")
          // A stream's shard is a hash of its id (on Postgres, `hashtextextended`): with 8 streams, the shard read
          // here had none of them once in 256 runs, and the test read nothing. With 32, once in 2^32.
          yield* appendRounds(category, 32, 2)
          const subscriptionId = unique("sub-resume-")
          const shard = { index: 1, count: 2 }
          const first = yield* Effect.scoped(
            Effect.gen(function* () {
              const sub = yield* Subscription.make({ subscriptionId, categories: [category], shard })
              // Polled until the shard has no lag: another transaction open on the server (the xmin horizon is
              // cluster-wide) can hold part of the log back from the first poll.
              const events: Array<RecordedEvent> = []
              yield* waitUntil(
                Effect.flatMap(sub.poll, (page) => {
                  events.push(...page)
                  return Effect.map(sub.lag, (lag) => lag.events === 0)
                }),
                "the shard read everything"
              )
              yield* sub.checkpoint()
              return events
            })
          )
          yield* appendRounds(category, 32, 2, 2)
          const sub = yield* Subscription.make({ subscriptionId, categories: [category], shard })
          // Polled until caught up, as above: a poll only sees what committed behind the cluster-wide xmin horizon.
          const second: Array<RecordedEvent> = []
          yield* waitUntil(
            Effect.flatMap(sub.poll, (page) => {
              second.push(...page)
              return Effect.map(sub.lag, (lag) => lag.events === 0)
            }),
            "the shard read the new rounds"
          )
          const streams = new Set(first.map((e) => e.streamId))
          assert.isAbove(streams.size, 0)
          assert.deepStrictEqual(new Set(second.map((e) => e.streamId)), streams, "the same streams, none of the other shard")
          for (const [streamId, vs] of versionsByStream(second)) assert.deepStrictEqual(vs, [3, 4], streamId)
        }))

      it.scoped("a partitioned projection runs one unit per shard: every event handled once, each stream in order", () =>
        Effect.gen(function* () {
          const category = unique("partrun")
          const subscriptionId = unique("sub-partrun-")
          const handled: Array<RecordedEvent> = []
          const projection = Projection.atLeastOnce({
            subscriptionId,
            categories: [category],
            partitions: 4,
            handle: ({ recorded }) => Effect.sync(() => void handled.push(recorded))
          })
          const { runner, stop } = yield* startRunner([projection], "partrun-a")
          yield* appendRounds(category, 10, 3)
          yield* runner.whenCaughtUp(subscriptionId, "60 seconds")
          assert.strictEqual(handled.length, 30)
          assert.strictEqual(new Set(handled.map((e) => e.eventId)).size, 30)
          for (const [streamId, vs] of versionsByStream(handled)) assert.deepStrictEqual(vs, [1, 2, 3], streamId)
          const status = yield* runner.status
          assert.deepStrictEqual(
            status.map((s) => s.subscriptionId),
            range(4).map((index) => `${subscriptionId}#${index}of4`)
          )
          assert.deepStrictEqual(
            [...(yield* (yield* SubscriptionStore.SubscriptionStore).shardIds(subscriptionId))].sort(),
            range(4).map((index) => `${subscriptionId}#${index}of4`)
          )
          yield* stop
        }))

      it.scoped("two runners share a transactional partitioned projection: the read model has each event exactly once", () =>
        Effect.gen(function* () {
          const model = yield* TxReadModel
          const category = unique("parttx")
          const subscriptionId = unique("sub-parttx-")
          const projection = Projection.transactional({
            subscriptionId,
            categories: [category],
            partitions: 4,
            handle: ({ recorded }) => model.insert(`${subscriptionId}:${recorded.streamId}:${recorded.streamVersion}`)
          })
          const a = yield* startRunner([projection], "parttx-a")
          const b = yield* startRunner([projection], "parttx-b")
          yield* appendRounds(category, 10, 3)
          yield* a.runner.whenCaughtUp(subscriptionId, "60 seconds")
          // One runner stops (releasing its shards): the other takes them over and goes on.
          yield* a.stop
          yield* appendRounds(category, 10, 2, 3)
          yield* b.runner.whenCaughtUp(subscriptionId, "60 seconds")
          const rows = yield* model.rows(`${subscriptionId}:`)
          assert.strictEqual(rows.length, 50)
          assert.strictEqual(new Set(rows).size, 50, "no event applied twice")
          yield* b.stop
        }))

      it.scoped("a changed partition count is refused before anything is handled; a rebuild changes it", () =>
        Effect.gen(function* () {
          const category = unique("partk")
          const subscriptionId = unique("sub-partk-")
          const store = yield* SubscriptionStore.SubscriptionStore
          const handled: Array<{ readonly partitions: number; readonly eventId: string }> = []
          const withPartitions = (partitions: number | undefined) =>
            Projection.atLeastOnce({
              subscriptionId,
              categories: [category],
              ...(partitions === undefined ? {} : { partitions }),
              handle: ({ recorded }) => Effect.sync(() => void handled.push({ partitions: partitions ?? 1, eventId: recorded.eventId }))
            })
          yield* appendRounds(category, 5, 4)
          const four = yield* startRunner([withPartitions(4)], "partk-4")
          yield* four.runner.whenCaughtUp(subscriptionId, "60 seconds")
          yield* four.stop
          assert.strictEqual(handled.length, 20)

          for (const [partitions, recorded] of [
            [2, [4]],
            [undefined, [4]]
          ] as const) {
            const changed = yield* startRunner([withPartitions(partitions)], "partk-changed")
            const failure = yield* Effect.flip(changed.runner.whenCaughtUp(subscriptionId, "30 seconds"))
            assert.strictEqual(failure._tag, "ProjectionFailed")
            const reason = failure._tag === "ProjectionFailed" ? failure.reason : undefined
            assert.strictEqual(reason?._tag, "SubscriptionFailed")
            const error = reason?._tag === "SubscriptionFailed" ? reason.error : undefined
            assert.strictEqual(error?._tag, "PartitionsChanged")
            if (error?._tag === "PartitionsChanged") {
              assert.strictEqual(error.subscriptionId, subscriptionId)
              assert.deepStrictEqual(error.recorded, recorded)
              assert.strictEqual(error.requested, partitions ?? 1)
            }
            yield* changed.stop
          }
          assert.strictEqual(handled.length, 20, "nothing handled under another count")

          const progress: Array<ProjectionRunner.Progress> = []
          const rebuilt = yield* ProjectionRunner.rebuild(withPartitions(2), { ...fast, workerId: "partk-rebuild" }, (p) =>
            Effect.sync(() => void progress.push(p))
          )
          assert.deepStrictEqual(rebuilt, { done: 20, total: 20 })
          assert.deepStrictEqual(progress.at(-1), { done: 20, total: 20 })
          const byRebuild = handled.slice(20)
          assert.strictEqual(byRebuild.length, 20)
          assert.strictEqual(new Set(byRebuild.map((h) => h.eventId)).size, 20, "the rebuild handled each event once")
          assert.deepStrictEqual(
            [...(yield* store.shardIds(subscriptionId))].sort(),
            [`${subscriptionId}#0of2`, `${subscriptionId}#1of2`],
            "only the new count's checkpoints are left"
          )

          const two = yield* startRunner([withPartitions(2)], "partk-2")
          yield* appendRounds(category, 5, 2, 4)
          yield* two.runner.whenCaughtUp(subscriptionId, "60 seconds")
          const after = handled.slice(40)
          assert.strictEqual(after.length, 10, "only the new events: the rebuild's checkpoints hold")
          assert.isTrue(after.every((h) => h.partitions === 2))
          yield* two.stop
        }))

      it.scoped("a rebuild to another count waits while a runner of the old count holds a shard; that runner cannot come back", () =>
        Effect.gen(function* () {
          const category = unique("partwait")
          const subscriptionId = unique("sub-partwait-")
          const store = yield* SubscriptionStore.SubscriptionStore
          const handled: Array<number> = []
          const withPartitions = (partitions: number) =>
            Projection.atLeastOnce({
              subscriptionId,
              categories: [category],
              partitions,
              handle: () => Effect.sync(() => void handled.push(partitions))
            })
          yield* appendRounds(category, 6, 2)
          const old = yield* startRunner([withPartitions(2)], "partwait-old")
          yield* old.runner.whenCaughtUp(subscriptionId, "60 seconds")
          const rebuild = yield* Effect.fork(ProjectionRunner.rebuild(withPartitions(3), { ...fast, workerId: "partwait-rebuild" }))
          // The rebuild holds every new shard's lease, then waits for the old runner's.
          yield* waitUntil(
            Effect.map(
              Effect.forEach(range(3), (index) => Lease.status(`${subscriptionId}#${index}of3`)),
              (leases) => leases.every((l) => Option.exists(l, (s) => s.workerId === "partwait-rebuild"))
            ),
            "the rebuild holds the new shards"
          )
          // Several recheck intervals: it is still waiting, and has handled nothing.
          yield* Effect.sleep("1 second")
          assert.isNull(rebuild.unsafePoll(), "the rebuild waits for the old runner")
          assert.isFalse(handled.includes(3))
          yield* old.stop
          const done = yield* Fiber.join(rebuild)
          assert.deepStrictEqual(done, { done: 12, total: 12 })
          assert.strictEqual(handled.filter((k) => k === 3).length, 12)
          assert.deepStrictEqual(
            [...(yield* store.shardIds(subscriptionId))].sort(),
            range(3).map((index) => `${subscriptionId}#${index}of3`)
          )
          // The old count started again is refused, having handled nothing.
          const before = handled.length
          const again = yield* startRunner([withPartitions(2)], "partwait-again")
          const failure = yield* Effect.flip(again.runner.whenCaughtUp(subscriptionId, "30 seconds"))
          assert.strictEqual(failure._tag === "ProjectionFailed" ? failure.reason._tag : failure._tag, "SubscriptionFailed")
          assert.strictEqual(handled.length, before)
          yield* again.stop
        }))

      it.scoped("a refused start of another count leaves nothing that stops the running count", () =>
        Effect.gen(function* () {
          const category = unique("partpoison")
          const subscriptionId = unique("sub-partpoison-")
          const leases = yield* LeaseStore.LeaseStore
          const handled: Array<number> = []
          const withPartitions = (partitions: number) =>
            Projection.atLeastOnce({
              subscriptionId,
              categories: [category],
              partitions,
              handle: () => Effect.sync(() => void handled.push(partitions))
            })
          yield* appendRounds(category, 6, 2)
          const four = yield* startRunner([withPartitions(4)], "partpoison-4")
          yield* four.runner.whenCaughtUp(subscriptionId, "60 seconds")
          yield* four.stop
          // A mistaken deploy with 2: refused, it handles nothing, and its lease rows stay behind.
          const two = yield* startRunner([withPartitions(2)], "partpoison-2")
          const failure = yield* Effect.flip(two.runner.whenCaughtUp(subscriptionId, "30 seconds"))
          assert.strictEqual(failure._tag === "ProjectionFailed" ? failure.reason._tag : failure._tag, "SubscriptionFailed")
          yield* two.stop
          assert.isFalse(handled.includes(2))
          // A runner of 2 in the middle of its check (its lease live, no checkpoint) does not stop 4 either.
          const canary = yield* leases.acquire(`${subscriptionId}#0of2`, "partpoison-canary", Duration.minutes(1))
          assert.isTrue(Option.isSome(canary))
          // The running count starts again (a restart, a failover, a handover) and goes on.
          const again = yield* startRunner([withPartitions(4)], "partpoison-4b")
          yield* appendRounds(category, 6, 1, 2)
          yield* again.runner.whenCaughtUp(subscriptionId, "60 seconds")
          assert.strictEqual(handled.filter((k) => k === 4).length, 18)
          yield* again.stop
          yield* leases.release(`${subscriptionId}#0of2`, { workerId: "partpoison-canary", fenceToken: Option.getOrThrow(canary).fenceToken })
        }))

      it.scoped("while a rebuild waits for the old count, the old count cannot take back a cleared shard", () =>
        Effect.gen(function* () {
          const category = unique("partretake")
          const subscriptionId = unique("sub-partretake-")
          const leases = yield* LeaseStore.LeaseStore
          const handled: Array<number> = []
          const withPartitions = (partitions: number) =>
            Projection.atLeastOnce({
              subscriptionId,
              categories: [category],
              partitions,
              handle: () => Effect.sync(() => void handled.push(partitions))
            })
          // The retaken shard must have events to handle, or it is caught up (lag 0) before its start is refused:
          // with 6 streams it had none once in 64 runs on Postgres (a stream's shard is a hash of its id); with 32, once in 2^32.
          yield* appendRounds(category, 32, 2)
          const old = yield* startRunner([withPartitions(2)], "partretake-old")
          yield* old.runner.whenCaughtUp(subscriptionId, "60 seconds")
          yield* old.stop
          const before = handled.length
          // A runner of the old count still holds shard 0: the rebuild clears shard 1 and waits for shard 0.
          const held = yield* leases.acquire(`${subscriptionId}#0of2`, "partretake-holder", Duration.minutes(1))
          assert.isTrue(Option.isSome(held))
          const rebuild = yield* Effect.fork(ProjectionRunner.rebuild(withPartitions(3), { ...fast, workerId: "partretake-rebuild" }))
          const store = yield* SubscriptionStore.SubscriptionStore
          yield* waitUntil(
            Effect.map(store.shardIds(subscriptionId), (ids) => !ids.includes(`${subscriptionId}#1of2`)),
            "the rebuild cleared the free shard of the old count"
          )
          // An old-count runner (a standby, a restart) now takes the cleared shard: it must refuse.
          const retake = yield* startRunner([withPartitions(2)], "partretake-again")
          const failure = yield* Effect.flip(retake.runner.whenCaughtUp(subscriptionId, "30 seconds"))
          assert.strictEqual(failure._tag === "ProjectionFailed" ? failure.reason._tag : failure._tag, "SubscriptionFailed")
          yield* retake.stop
          assert.strictEqual(handled.length, before, "the old count handled nothing")
          yield* leases.release(`${subscriptionId}#0of2`, { workerId: "partretake-holder", fenceToken: Option.getOrThrow(held).fenceToken })
          const done = yield* Fiber.join(rebuild)
          assert.deepStrictEqual(done, { done: 64, total: 64 })
          // The old count's runner, stopped meanwhile, left a row: the new count still runs.
          const three = yield* startRunner([withPartitions(3)], "partretake-3")
          yield* appendRounds(category, 32, 1, 2)
          yield* three.runner.whenCaughtUp(subscriptionId, "60 seconds")
          assert.strictEqual(handled.filter((k) => k === 3).length, 96)
          yield* three.stop
        }))

      it.scoped("bad partition counts and shards are InvalidInput, and nothing starts", () =>
        Effect.gen(function* () {
          const store = yield* SubscriptionStore.SubscriptionStore
          const subscriptionId = unique("sub-partbad-")
          for (const partitions of [0, -1, 1.5, Partition.maxPartitions + 1]) {
            const projection = Projection.atLeastOnce({ subscriptionId, partitions, handle: () => Effect.void })
            const error = yield* Effect.flip(ProjectionRunner.run([projection], { workerId: "bad" }))
            assert.strictEqual(error.field, "partitions", String(partitions))
          }
          const long = Projection.atLeastOnce({ subscriptionId: "x".repeat(250), partitions: 16, handle: () => Effect.void })
          assert.strictEqual((yield* Effect.flip(ProjectionRunner.run([long], { workerId: "bad" }))).field, "subscriptionId")
          // A projection and another's shard under one id.
          const clash = [
            Projection.atLeastOnce({ subscriptionId, partitions: 2, handle: () => Effect.void }),
            Projection.atLeastOnce({ subscriptionId: `${subscriptionId}#1of2`, handle: () => Effect.void })
          ]
          assert.strictEqual((yield* Effect.flip(ProjectionRunner.run(clash, { workerId: "bad" }))).field, "subscriptionId")
          for (const shard of [
            { index: 2, count: 2 },
            { index: -1, count: 2 },
            { index: 0, count: 0 },
            { index: 0.5, count: 2 },
            { index: 0, count: Partition.maxPartitions + 1 }
          ]) {
            const error = yield* Effect.flip(Subscription.make({ subscriptionId, shard }))
            assert.strictEqual(error._tag, "InvalidInput")
            if (error._tag === "InvalidInput") assert.strictEqual(error.field, "shard")
          }
          assert.deepStrictEqual(yield* store.shardIds(subscriptionId), [], "nothing stored")
        }))
    })
  })
