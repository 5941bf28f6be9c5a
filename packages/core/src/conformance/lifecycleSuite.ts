/**
 * The stream lifecycle, run against every store: archiving (read-only, left
 * out of loads and category reads unless asked), unarchiving, and deletion
 * (events and snapshot removed, a `$StreamDeleted` tombstone at the next
 * version, the id never reused), and subscriptions that move past the
 * removed versions instead of stalling or failing with `MissingVersion`.
 *
 * @since 0.2.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as AggregateRoot from "../AggregateRoot.js"
import * as Cursor from "../Cursor.js"
import * as EventStore from "../EventStore.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import type * as LeaseStore from "../LeaseStore.js"
import * as Projection from "../Projection.js"
import * as ProjectionRunner from "../ProjectionRunner.js"
import type { NewEvent, RecordedEvent } from "../RecordedEvent.js"
import * as Subscription from "../Subscription.js"
import type * as SubscriptionStore from "../SubscriptionStore.js"
import { account, Deposited, Opened, unique } from "./fixtures.js"
import { begin, collectUntil, perStreamOrdered, untilCommitSafe } from "./scopes.js"

const ev = (mark: string): NewEvent => ({ eventType: "lifecycle.marked", schemaVersion: 1, data: { mark } })

const versionsOf = (events: ReadonlyArray<RecordedEvent>, streamId: string) =>
  events.filter((e) => e.streamId === streamId).map((e) => e.streamVersion)

const readAllOf = (streamId: string) => Stream.runCollect(EventStore.readStream(streamId)).pipe(Effect.map((c) => [...c]))

const categoryStreams = (category: string, options?: EventStore.ReadLogOptions) =>
  Stream.runCollect(EventStore.readCategory(category, options)).pipe(
    Effect.map((events) => [...new Set([...events].map((e) => e.streamId))].sort())
  )

/**
 * Registers the lifecycle suite.
 *
 * @since 0.2.0
 * @category suites
 */
export const lifecycleSuite = (
  name: string,
  storeLayer: Layer.Layer<EventStore.EventStore | SubscriptionStore.SubscriptionStore>
) =>
  describe(`stream lifecycle: ${name}`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("an archived stream refuses appends and writes nothing; unarchived, it takes them again", () =>
        Effect.gen(function* () {
          const category = unique("arch")
          const s = `${category}-1`
          yield* EventStore.append(s, category, ExpectedVersion.NoStream, [ev("a"), ev("b")])
          yield* EventStore.archive(s)
          yield* EventStore.archive(s) // again: nothing changes
          for (const expected of [ExpectedVersion.Exact(2), ExpectedVersion.Any, ExpectedVersion.StreamExists, ExpectedVersion.NoStream]) {
            const refused = yield* Effect.flip(EventStore.append(s, category, expected, [ev("c")]))
            assert.strictEqual(refused._tag, "StreamArchived", ExpectedVersion.format(expected))
          }
          // One archived stream refuses the whole batch.
          const other = `${category}-2`
          const batch = yield* Effect.flip(
            EventStore.appendMany([
              { streamId: other, category, expected: ExpectedVersion.NoStream, events: [ev("x")] },
              { streamId: s, category, expected: ExpectedVersion.Exact(2), events: [ev("c")] }
            ])
          )
          assert.deepStrictEqual([batch._tag, "streamId" in batch ? batch.streamId : ""], ["StreamArchived", s])
          assert.strictEqual(yield* EventStore.streamVersion(other), 0)
          assert.strictEqual(yield* EventStore.streamVersion(s), 2)
          yield* EventStore.unarchive(s)
          yield* EventStore.unarchive(s) // again: nothing changes
          const committed = yield* EventStore.append(s, category, ExpectedVersion.Exact(2), [ev("c")])
          assert.strictEqual(committed.lastVersion, 3)
        }))

      it.effect("load and readCategory leave an archived stream out unless asked; readStream still reads it", () =>
        Effect.gen(function* () {
          const category = unique("archload")
          const Account = account(category, 2)
          const [a, b] = ["a", "b"]
          for (const id of [a, b]) {
            const root = AggregateRoot.record(AggregateRoot.make(Account, id), Opened.make({ owner: id }))
            yield* EventStore.saveSnapshotting(AggregateRoot.record(root, Deposited.make({ amount: 5 })))
          }
          yield* EventStore.archive(`${category}-${a}`)
          assert.isTrue(Option.isNone(yield* EventStore.load(Account, a)))
          assert.isTrue(Option.isNone(yield* EventStore.loadSnapshotted(Account, a)))
          const included = yield* EventStore.load(Account, a, { includeArchived: true })
          assert.deepStrictEqual(Option.map(included, (r) => [r.version, r.state.balance]), Option.some([2, 5]))
          const snapshotted = yield* EventStore.loadSnapshotted(Account, a, { includeArchived: true })
          assert.deepStrictEqual(Option.map(snapshotted, (r) => r.version), Option.some(2))
          assert.isTrue(Option.isSome(yield* EventStore.load(Account, b)))
          assert.deepStrictEqual(yield* categoryStreams(category), [`${category}-${b}`])
          assert.deepStrictEqual(yield* categoryStreams(category, { includeArchived: true }), [`${category}-${a}`, `${category}-${b}`])
          assert.deepStrictEqual(
            (yield* readAllOf(`${category}-${a}`)).map((e) => e.streamVersion),
            [1, 2]
          )
          yield* EventStore.unarchive(`${category}-${a}`)
          assert.isTrue(Option.isSome(yield* EventStore.load(Account, a)))
          assert.deepStrictEqual(yield* categoryStreams(category), [`${category}-${a}`, `${category}-${b}`])
        }))

      it.effect("a missing stream is StreamNotFound, a bad id InvalidInput, and a $ event type is reserved", () =>
        Effect.gen(function* () {
          const s = `${unique("nf")}-1`
          for (const op of [EventStore.archive, EventStore.unarchive, EventStore.deleteStream]) {
            const missing = yield* Effect.flip(op(s))
            assert.deepStrictEqual([missing._tag, "streamId" in missing ? missing.streamId : ""], ["StreamNotFound", s])
            const bad = yield* Effect.flip(op(""))
            assert.strictEqual(bad._tag, "InvalidInput")
          }
          const reserved = yield* Effect.flip(
            EventStore.append(s, "nf", ExpectedVersion.NoStream, [{ eventType: "$StreamDeleted", schemaVersion: 1, data: {} }])
          )
          assert.deepStrictEqual([reserved._tag, "field" in reserved ? reserved.field : ""], ["InvalidInput", "events[0].eventType"])
          assert.strictEqual(yield* EventStore.streamVersion(s), 0)
        }))

      it.effect("deleteStream removes the events and snapshot, leaves a tombstone, and the id is never reused", () =>
        Effect.gen(function* () {
          const category = unique("del")
          const Account = account(category, 2)
          const root = AggregateRoot.record(AggregateRoot.make(Account, "1"), Opened.make({ owner: "Ada" }))
          yield* EventStore.saveSnapshotting(AggregateRoot.record(root, Deposited.make({ amount: 5 }), Deposited.make({ amount: 7 })))
          const s = `${category}-1`
          yield* EventStore.archive(s) // an archived stream can be deleted
          yield* EventStore.deleteStream(s)
          const left = yield* readAllOf(s)
          assert.deepStrictEqual(
            left.map((e) => [e.streamVersion, e.eventType, e.data]),
            [[4, EventStore.streamDeletedType, { deletedVersion: 3 }]]
          )
          assert.isTrue(EventStore.isSystemEvent(left[0]!))
          assert.strictEqual(yield* EventStore.streamVersion(s), 4)
          assert.isTrue(Option.isNone(yield* EventStore.load(Account, "1")))
          assert.isTrue(Option.isNone(yield* EventStore.load(Account, "1", { includeArchived: true })))
          assert.isTrue(Option.isNone(yield* EventStore.loadSnapshotted(Account, "1")))
          // The category read shows the tombstone only.
          const inCategory = yield* Stream.runCollect(EventStore.readCategory(category, { includeArchived: true }))
          assert.deepStrictEqual([...inCategory].map((e) => e.eventType), [EventStore.streamDeletedType])
          for (const expected of [ExpectedVersion.NoStream, ExpectedVersion.Any, ExpectedVersion.StreamExists, ExpectedVersion.Exact(4)]) {
            const refused = yield* Effect.flip(EventStore.append(s, category, expected, [ev("again")]))
            assert.deepStrictEqual(
              [refused._tag, "tombstoneVersion" in refused ? refused.tombstoneVersion : 0],
              ["StreamDeleted", 4],
              ExpectedVersion.format(expected)
            )
          }
          const fresh = yield* EventStore.loadOrDefault(Account, "1")
          const saved = yield* Effect.either(EventStore.save(AggregateRoot.record(fresh, Opened.make({ owner: "Bob" }))))
          assert.isTrue(Either.isLeft(saved) && saved.left._tag === "StreamDeleted")
          const batch = yield* Effect.flip(
            EventStore.appendMany([
              { streamId: `${category}-0`, category, expected: ExpectedVersion.NoStream, events: [ev("x")] },
              { streamId: s, category, expected: ExpectedVersion.Any, events: [ev("y")] }
            ])
          )
          assert.strictEqual(batch._tag, "StreamDeleted")
          assert.strictEqual(yield* EventStore.streamVersion(`${category}-0`), 0)
          const archived = yield* Effect.flip(EventStore.archive(s))
          assert.strictEqual(archived._tag, "StreamDeleted")
          // Deleting again changes nothing.
          yield* EventStore.deleteStream(s)
          assert.deepStrictEqual((yield* readAllOf(s)).map((e) => e.streamVersion), [4])
        }))

      it.effect("archiving changes nothing for subscriptions: an archived stream's events are delivered", () =>
        Effect.scoped(
          Effect.gen(function* () {
            const category = unique("archsub")
            const s = `${category}-1`
            yield* EventStore.append(s, category, ExpectedVersion.NoStream, [ev("a"), ev("b")])
            yield* EventStore.archive(s)
            const sub = yield* Subscription.make({ subscriptionId: unique("archsub"), categories: [category] })
            const got = yield* collectUntil(sub, (events) => events.length >= 2)
            assert.deepStrictEqual(versionsOf(got, s), [1, 2])
          })
        ))

      it.effect("a subscription behind a deletion delivers the tombstone next, with no MissingVersion", () =>
        Effect.scoped(
          Effect.gen(function* () {
            const category = unique("delsub")
            const [s, t] = [`${category}-s`, `${category}-t`]
            yield* EventStore.append(s, category, ExpectedVersion.NoStream, [ev("s1"), ev("s2"), ev("s3")])
            yield* untilCommitSafe
            // One subscription read part of s before the deletion; another starts after it.
            const partial = yield* Subscription.make({ subscriptionId: unique("delsub"), categories: [category], batchSize: 2 })
            assert.deepStrictEqual(versionsOf(yield* partial.poll, s), [1, 2])
            yield* EventStore.deleteStream(s)
            yield* EventStore.append(t, category, ExpectedVersion.NoStream, [ev("t1")])
            const late = yield* Subscription.make({ subscriptionId: unique("delsub"), categories: [category] })
            for (const sub of [partial, late]) {
              const got = yield* collectUntil(sub, (events) => events.some((e) => e.streamId === t))
              const delivered = versionsOf(got, s)
              assert.deepStrictEqual(delivered, [4])
              assert.strictEqual(got.find((e) => e.streamId === s)?.eventType, EventStore.streamDeletedType)
              assert.isTrue(perStreamOrdered(got))
            }
            // Checkpointed and restarted: nothing of s again, nothing stalls.
            yield* partial.checkpoint()
            assert.deepStrictEqual(yield* partial.lag.pipe(Effect.map((l) => l.events)), 0)
          })
        ))

      it.effect("a subscription holding an event back when its stream is deleted drops it and delivers the tombstone", () =>
        Effect.scoped(
          Effect.gen(function* () {
            const category = unique("delheld")
            const s = `${category}-s`
            yield* EventStore.append(s, category, ExpectedVersion.NoStream, [ev("s1")])
            // s v3 sorts before s v2: its transaction took its id first.
            const early = yield* begin
            yield* EventStore.append(s, category, ExpectedVersion.Exact(1), [ev("s2")])
            yield* early.run(EventStore.append(s, category, ExpectedVersion.Exact(2), [ev("s3")]))
            yield* early.commit
            // The first page's content is asserted: all three must be readable.
            yield* untilCommitSafe
            const sub = yield* Subscription.make({ subscriptionId: unique("delheld"), categories: [category], batchSize: 2 })
            // The first page is s v1 and s v3: v1 is delivered, v3 held for v2.
            const first = yield* collectUntil(sub, (events) => events.length >= 1)
            assert.deepStrictEqual(versionsOf(first, s), [1])
            const held = yield* sub.position
            assert.strictEqual(held.held, 1)
            yield* EventStore.deleteStream(s)
            const rest = yield* collectUntil(sub, (events) => events.length >= 1)
            assert.deepStrictEqual(
              rest.map((e) => [e.streamVersion, e.eventType]),
              [[4, EventStore.streamDeletedType]]
            )
            const after = yield* sub.position
            assert.strictEqual(after.held, 0)
            // The checkpoint moves past everything: a restart from it reads nothing of s again.
            yield* sub.checkpoint()
            assert.isTrue(Cursor.order(after.safe, after.read) === 0)
          })
        ))
    })
  })

/**
 * Registers the projection part of the lifecycle suite: a projection with
 * `onStreamDeleted` drops a deleted stream's rows; one without it skips the
 * tombstone (its aggregate's codec is never asked to decode it) and keeps
 * running.
 *
 * @since 0.2.0
 * @category suites
 */
export const lifecycleProjectionSuite = (
  name: string,
  storeLayer: Layer.Layer<EventStore.EventStore | SubscriptionStore.SubscriptionStore | LeaseStore.LeaseStore>
) =>
  describe(`stream lifecycle, projections: ${name}`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("onStreamDeleted drops a deleted stream's read model rows; a projection without it skips the tombstone", () =>
        Effect.scoped(
          Effect.gen(function* () {
            const category = unique("delproj")
            const Account = account(category)
            const balances = new Map<string, number>()
            const deletions: Array<readonly [string, number]> = []
            const seen: Array<string> = []
            const withDrop = Projection.atLeastOnce({
              subscriptionId: unique("delproj-drop-"),
              aggregate: Account,
              handle: ({ event, recorded }) =>
                Effect.sync(() => {
                  if (event._tag === "Deposited") balances.set(recorded.streamId, (balances.get(recorded.streamId) ?? 0) + event.amount)
                }),
              onStreamDeleted: ({ streamId, deletedVersion }) =>
                Effect.sync(() => {
                  balances.delete(streamId)
                  deletions.push([streamId, deletedVersion])
                })
            })
            const without = Projection.atLeastOnce({
              subscriptionId: unique("delproj-skip-"),
              aggregate: Account,
              handle: ({ recorded }) => Effect.sync(() => void seen.push(`${recorded.streamId}@${recorded.streamVersion}`))
            })
            const runner = yield* ProjectionRunner.run([withDrop, without], { workerId: unique("w") })
            for (const id of ["a", "b"]) {
              const root = AggregateRoot.record(AggregateRoot.make(Account, id), Opened.make({ owner: id }))
              yield* EventStore.save(AggregateRoot.record(root, Deposited.make({ amount: 10 })))
            }
            yield* EventStore.deleteStream(`${category}-a`)
            const b = yield* EventStore.loadOrDefault(Account, "b")
            yield* EventStore.save(AggregateRoot.record(b, Deposited.make({ amount: 1 })))
            yield* runner.whenCaughtUp(withDrop.subscriptionId)
            yield* runner.whenCaughtUp(without.subscriptionId)
            assert.deepStrictEqual([...balances], [[`${category}-b`, 11]])
            assert.deepStrictEqual(deletions, [[`${category}-a`, 2]])
            // Whether a's events were handed over before their deletion depends on timing; its tombstone never is.
            assert.isFalse(seen.includes(`${category}-a@3`), "the tombstone never reaches handle")
            assert.deepStrictEqual(seen.filter((s) => s.startsWith(`${category}-b`)), [`${category}-b@1`, `${category}-b@2`, `${category}-b@3`])
            const states = (yield* runner.status).map((s) => s.state)
            assert.isFalse(states.includes("failed"), states.join(","))
          })
        ))
    })
  })
