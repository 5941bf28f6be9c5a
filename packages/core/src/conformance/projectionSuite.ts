/**
 * Projections, leases and failover, run against every store.
 *
 * @since 0.1.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as EventStore from "../EventStore.js"
import { MissingVersion } from "../EventStoreError.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import * as Lease from "../Lease.js"
import * as Metrics from "../Metrics.js"
import * as Projection from "../Projection.js"
import * as ProjectionRunner from "../ProjectionRunner.js"
import type { NewEvent } from "../RecordedEvent.js"
import * as LeaseStore from "../LeaseStore.js"
import type * as SubscriptionStore from "../SubscriptionStore.js"
import { Raw, TxReadModel, unique } from "./fixtures.js"
import { waitUntil } from "./scopes.js"

type Env = EventStore.EventStore | SubscriptionStore.SubscriptionStore | LeaseStore.LeaseStore | TxReadModel | Raw

const ev = (mark: string): NewEvent => ({ eventType: "proj.marked", schemaVersion: 1, data: { mark } })

/** Appends `n` events, one stream each, in category `category`. */
const appendEvents = (category: string, from: number, n: number) =>
  Effect.forEach(
    Array.from({ length: n }, (_, i) => from + i),
    (i) => EventStore.append(`${category}-e${i}`, category, ExpectedVersion.NoStream, [ev(`e${i}`)]),
    { discard: true }
  )

/**
 * A worker process: a runner in its own scope, over a lease store that can
 * be frozen (renewals hang, releases are lost), as a paused or dead process's
 * would be. `acquisitions` records the outcome of each of its attempts to
 * acquire a lease, in order; `freeze` returns once no renewal is in flight,
 * so the lease as stored then is the last one this worker will ever renew.
 */
const startWorker = (
  workerId: string,
  projections: ReadonlyArray<Projection.Projection>,
  options: Omit<ProjectionRunner.Options, "workerId">
) =>
  Effect.gen(function* () {
    const leases = yield* LeaseStore.LeaseStore
    let frozen = false
    let renewing = 0
    const acquisitions: Array<boolean> = []
    const chaotic: LeaseStore.LeaseStore = {
      ...leases,
      acquire: (id, worker, ttl) =>
        leases.acquire(id, worker, ttl).pipe(Effect.tap((held) => Effect.sync(() => void acquisitions.push(Option.isSome(held))))),
      renew: (id, fence, ttl) =>
        Effect.suspend(() =>
          frozen
            ? Effect.never
            : Effect.acquireUseRelease(
                Effect.sync(() => renewing++),
                () => leases.renew(id, fence, ttl),
                () => Effect.sync(() => renewing--)
              )
        ),
      release: (id, fence) => Effect.suspend(() => (frozen ? Effect.void : leases.release(id, fence)))
    }
    const scope = yield* Scope.make()
    const runner = yield* ProjectionRunner.run(projections, { ...options, workerId }).pipe(
      Effect.provideService(LeaseStore.LeaseStore, chaotic),
      Scope.extend(scope)
    )
    const isLeader = Effect.map(runner.status, (all) => all.some((s) => s.state === "leader"))
    return {
      runner,
      isLeader,
      acquisitions,
      freeze: Effect.zipRight(
        Effect.sync(() => {
          frozen = true
        }),
        Effect.repeat(Effect.sync(() => renewing), { until: (n) => n === 0, schedule: Schedule.spaced("5 millis") })
      ),
      stop: Scope.close(scope, Exit.void)
    }
  })

const fast = { pollInterval: "50 millis", leaseTtl: "1 second", leaseRecheckInterval: "200 millis", batchSize: 10 } as const

/**
 * Registers the projection suite: at-least-once and transactional
 * projections, leases, fencing, failover, retries and rebuilds.
 *
 * @since 0.1.0
 * @category suites
 */
export const projectionSuite = (name: string, storeLayer: Layer.Layer<Env>) =>
  describe(`projections: ${name}`, () => {
    layer(storeLayer, { timeout: "240 seconds", excludeTestServices: true })((it) => {
      it.effect("two runners on one subscription: exactly one processes at any time", () =>
        Effect.gen(function* () {
          const category = unique("pone")
          const subscriptionId = unique("sub-one-")
          let active = 0
          let maxActive = 0
          const seen = new Set<string>()
          const projection = Projection.atLeastOnce({
            subscriptionId,
            categories: [category],
            handle: ({ recorded }) =>
              Effect.gen(function* () {
                active++
                maxActive = Math.max(maxActive, active)
                yield* Effect.sleep("2 millis")
                seen.add(recorded.eventId)
                active--
              })
          })
          const a = yield* startWorker("one-a", [projection], fast)
          const b = yield* startWorker("one-b", [projection], fast)
          yield* appendEvents(category, 0, 60)
          let leadersSeen = 0
          yield* waitUntil(
            Effect.gen(function* () {
              const leaders = ((yield* a.isLeader) ? 1 : 0) + ((yield* b.isLeader) ? 1 : 0)
              leadersSeen = Math.max(leadersSeen, leaders)
              return seen.size >= 60
            }),
            "60 events handled"
          )
          assert.strictEqual(maxActive, 1)
          assert.strictEqual(leadersSeen, 1)
          yield* a.stop
          yield* b.stop
        }))

      it.effect("the leader dies without releasing: the follower takes over within ttl + recheck; nothing lost", () =>
        Effect.gen(function* () {
          const category = unique("pkill")
          const subscriptionId = unique("sub-kill-")
          const seen = new Set<string>()
          const projection = Projection.atLeastOnce({
            subscriptionId,
            categories: [category],
            handle: ({ recorded }) => Effect.sync(() => void seen.add(recorded.eventId))
          })
          const a = yield* startWorker("kill-a", [projection], fast)
          yield* waitUntil(a.isLeader, "A leads")
          const b = yield* startWorker("kill-b", [projection], fast)
          yield* appendEvents(category, 0, 10)
          yield* waitUntil(Effect.sync(() => seen.size >= 10), "first 10 handled")
          yield* a.freeze
          // From here A's lease expires within leaseTtl, and B tries to acquire at least leaseRecheckInterval
          // apart: "within ttl + recheck" means B is refused at most ttl / recheck + 1 times from now (one more
          // for an attempt already in flight), and its next attempt succeeds. Counting attempts, not
          // milliseconds, holds however loaded the machine is (a slow machine only makes fewer attempts).
          const refusalsBefore = b.acquisitions.length
          const frozenAt = Date.now()
          yield* a.stop
          yield* appendEvents(category, 10, 10)
          yield* waitUntil(b.isLeader, "B takes over", 60_000)
          console.log(`[projections: ${name}] failover after ${Date.now() - frozenAt} ms (leaseTtl 1000 ms + recheck 200 ms)`)
          const after = b.acquisitions.slice(refusalsBefore)
          assert.strictEqual(after.at(-1), true, "B's last attempt acquired the lease")
          assert.isTrue(after.slice(0, -1).every((held) => !held))
          assert.isAtMost(after.length - 1, 1000 / 200 + 1 + 1, `B refused ${after.length - 1} times after A froze`)
          yield* waitUntil(Effect.sync(() => seen.size >= 20), "all 20 handled")
          const lease = Option.getOrThrow(yield* Lease.status(subscriptionId))
          assert.strictEqual(lease.workerId, "kill-b")
          assert.strictEqual(lease.fenceToken, 2n)
          yield* b.stop
        }))

      it.effect("a paused leader wakes after a takeover: its checkpoint and transactional writes are refused", () =>
        Effect.gen(function* () {
          const model = yield* TxReadModel
          const category = unique("ppause")
          const subscriptionId = unique("sub-pause-")
          const stalled = yield* Deferred.make<void>()
          const resume = yield* Deferred.make<void>()
          let a: { readonly freeze: Effect.Effect<void> } | undefined
          const makeProjection = (worker: string) =>
            Projection.transactional({
              subscriptionId,
              categories: [category],
              handle: ({ recorded }) =>
                Effect.gen(function* () {
                  yield* model.insert(`${subscriptionId}:${recorded.eventId}`)
                  if (worker === "pause-a" && recorded.data.mark === "e3") {
                    // The process freezes here: no heartbeat, no progress.
                    yield* a!.freeze
                    yield* Deferred.succeed(stalled, undefined)
                    yield* Deferred.await(resume)
                  }
                })
            })
          const refusalsBefore = (yield* Metric.value(Metrics.fenceRefusals)).count
          const workerA = yield* startWorker("pause-a", [makeProjection("pause-a")], { ...fast, batchSize: 2 })
          a = workerA
          yield* waitUntil(workerA.isLeader, "A leads")
          const b = yield* startWorker("pause-b", [makeProjection("pause-b")], { ...fast, batchSize: 2 })
          yield* appendEvents(category, 0, 8)
          yield* Deferred.await(stalled)
          yield* waitUntil(b.isLeader, "B takes over", 10_000)
          // A wakes. (On Postgres its open transaction also holds the xmin horizon, so B can
          // deliver nothing written after it until A's transaction ends: that is the guard at work.)
          yield* Deferred.succeed(resume, undefined)
          yield* waitUntil(
            Effect.map(Metric.value(Metrics.fenceRefusals), (c) => c.count > refusalsBefore),
            "A's commit to be refused"
          )
          yield* waitUntil(Effect.map(workerA.isLeader, (l) => !l), "A back to standby")
          yield* b.runner.whenCaughtUp(subscriptionId)
          const rows = yield* model.rows(`${subscriptionId}:`)
          assert.strictEqual(rows.length, 8, "each event's row exactly once")
          assert.strictEqual(new Set(rows).size, 8)
          const status = (yield* b.runner.status)[0]!
          assert.strictEqual(status.lag.events, 0, "B's checkpoint was not clobbered")
          assert.strictEqual(Option.getOrThrow(status.lease).workerId, "pause-b")
          yield* workerA.stop
          yield* b.stop
        }))

      // A deadline, not a measurement: ~15 s on an idle machine, minutes when both cores are oversubscribed.
      const failoverDeadline = 600_000
      const forcedFailovers = (delivery: Projection.Delivery) =>
        Effect.gen(function* () {
          const model = yield* TxReadModel
          const category = unique("pff")
          const subscriptionId = unique(`sub-ff-${delivery}-`)
          const handledIds: Array<string> = []
          const handle = ({ recorded }: Projection.HandledEvent<{ readonly eventId: string }>) =>
            Effect.gen(function* () {
              yield* model.insert(`${subscriptionId}:${recorded.eventId}`)
              handledIds.push(recorded.eventId)
              yield* Effect.sleep("1 millis")
            })
          const projection =
            delivery === "transactional"
              ? Projection.transactional({ subscriptionId, categories: [category], handle })
              : Projection.atLeastOnce({ subscriptionId, categories: [category], handle })
          const total = 300
          const writer = yield* Effect.fork(
            Effect.forEach(
              Array.from({ length: total / 10 }, (_, i) => i),
              (i) => Effect.zipRight(appendEvents(category, i * 10, 10), Effect.sleep("20 millis")),
              { discard: true }
            )
          )
          let workers = [
            yield* startWorker("ff-0", [projection], { ...fast, batchSize: 5 }),
            yield* startWorker("ff-1", [projection], { ...fast, batchSize: 5 })
          ]
          for (let k = 0; k < 20; k++) {
            yield* waitUntil(
              Effect.map(Effect.all(workers.map((w) => w.isLeader)), (l) => l.some(Boolean)),
              "a leader"
            )
            const leaders = yield* Effect.all(workers.map((w) => w.isLeader))
            const index = leaders.indexOf(true)
            yield* Effect.sleep(`${20 + ((k * 7) % 30)} millis`)
            yield* workers[index]!.stop
            workers = [...workers.filter((_, i) => i !== index), yield* startWorker(`ff-${k + 2}`, [projection], { ...fast, batchSize: 5 })]
          }
          yield* Effect.fromFiber(writer)
          yield* waitUntil(
            Effect.map(Effect.all(workers.map((w) => w.isLeader)), (l) => l.some(Boolean)),
            "a final leader"
          )
          const leaders = yield* Effect.all(workers.map((w) => w.isLeader))
          yield* workers[leaders.indexOf(true)]!.runner.whenCaughtUp(subscriptionId, "300 seconds")
          const lease = Option.getOrThrow(yield* Lease.status(subscriptionId))
          assert.isAtLeast(Number(lease.fenceToken), 21, "at least 20 failovers happened")
          const rows = yield* model.rows(`${subscriptionId}:`)
          for (const w of workers) yield* w.stop
          return { rows, handledIds, total }
        })

      it.effect("transactional handler under 20 forced failovers: read-model rows == events, exactly", () =>
        Effect.gen(function* () {
          const { rows, total } = yield* forcedFailovers("transactional")
          assert.strictEqual(rows.length, total)
          assert.strictEqual(new Set(rows).size, total)
        }), { timeout: failoverDeadline })

      it.effect("at-least-once handler under 20 forced failovers: every event handled at least once", () =>
        Effect.gen(function* () {
          const { handledIds, total } = yield* forcedFailovers("at-least-once")
          assert.strictEqual(new Set(handledIds).size, total)
          assert.isAtLeast(handledIds.length, total)
        }), { timeout: failoverDeadline })

      it.effect("a failing handler is retried with backoff, then stops its projection naming the event", () =>
        Effect.gen(function* () {
          const category = unique("pfail")
          let attempts = 0
          const healthy = new Set<string>()
          const poisoned = Projection.atLeastOnce({
            subscriptionId: unique("sub-poison-"),
            categories: [category],
            handle: ({ recorded }) =>
              recorded.data.mark === "e2"
                ? Effect.zipRight(Effect.sync(() => void attempts++), Effect.fail("boom" as const))
                : Effect.void
          })
          const other = Projection.atLeastOnce({
            subscriptionId: unique("sub-healthy-"),
            categories: [category],
            handle: ({ recorded }) => Effect.sync(() => void healthy.add(recorded.eventId))
          })
          // The delays the runner takes from its retry schedule, recorded as it steps it. Never wall-clock
          // gaps: on a loaded machine those say nothing. (ProjectionRunner.test.ts checks the waits
          // themselves, on TestClock.)
          const delays: Array<number> = []
          const w = yield* startWorker("fail-a", [poisoned, other], {
            ...fast,
            retry: Schedule.exponential("40 millis", 2).pipe(
              Schedule.tapOutput((delay) => Effect.sync(() => void delays.push(Duration.toMillis(delay))))
            ),
            maxAttempts: 4
          })
          yield* appendEvents(category, 0, 6)
          yield* waitUntil(
            Effect.map(w.runner.status, (all) => all.some((s) => s.state === "failed")),
            "the poisoned projection to stop"
          )
          yield* waitUntil(Effect.sync(() => healthy.size >= 6), "the other projection to handle everything")
          const failedStatus = (yield* w.runner.status).find((s) => s.state === "failed")!
          const failure = Option.getOrThrow(failedStatus.failure)
          assert.strictEqual(failure._tag, "ProjectionFailed")
          assert.strictEqual(failure.streamId, `${category}-e2`)
          assert.strictEqual(failure.streamVersion, 1)
          assert.strictEqual(failure.attempts, 4)
          assert.strictEqual(attempts, 4)
          // The schedule is stepped once per failed attempt; the fourth step ends the retries (maxAttempts).
          assert.deepStrictEqual(delays, [40, 80, 160, 320], "backoff grows: the schedule's delay after each failure")
          assert.isAtLeast(failedStatus.lag.events, 4, "the checkpoint stays before the failed event")
          yield* w.stop
        }))

      it.effect("a deleted version stops the projection with ProjectionFailed (cause MissingVersion), shown in status", () => {
        const category = unique("pgap")
        const [stream, other] = [`${category}-s`, `${category}-t`]
        let deleted = false
        return Effect.gen(function* () {
          const raw = yield* Raw
          for (let v = 1; v <= 3; v++) {
            yield* EventStore.append(stream, category, v === 1 ? ExpectedVersion.NoStream : ExpectedVersion.Exact(v - 1), [ev(`v${v}`)])
          }
          yield* EventStore.append(other, category, ExpectedVersion.NoStream, [ev("t1")])
          yield* raw.deleteEvent(stream, 2)
          deleted = true
          const handled: Array<string> = []
          const projection = Projection.atLeastOnce({
            subscriptionId: unique("sub-gap-"),
            categories: [category],
            handle: ({ recorded }) => Effect.sync(() => void handled.push(`${recorded.streamId}@${recorded.streamVersion}`))
          })
          const w = yield* startWorker("gap-a", [projection], fast)
          yield* waitUntil(
            Effect.map(w.runner.status, (all) => all.some((s) => s.state === "failed")),
            "the projection to stop at the gap"
          )
          const [status] = yield* w.runner.status
          assert.strictEqual(status!.state, "failed")
          const failure = Option.getOrThrow(status!.failure)
          assert.strictEqual(failure._tag, "ProjectionFailed")
          assert.strictEqual(failure.subscriptionId, projection.subscriptionId)
          assert.strictEqual(failure.streamId, stream)
          assert.strictEqual(failure.streamVersion, 2)
          const cause = failure.cause
          assert.instanceOf(cause, MissingVersion)
          if (cause instanceof MissingVersion) {
            assert.strictEqual(cause.streamId, stream)
            assert.strictEqual(cause.missing, 2)
            assert.strictEqual(cause.seen, 3)
          }
          // Nothing past the gap was handled: the stream is never delivered out of order.
          assert.notInclude(handled, `${stream}@3`)
          assert.isAtLeast(status!.lag.events, 1, "the checkpoint stays before v3")
          yield* w.stop
        }).pipe(
          // Mend the log for whatever reads it whole later, also when an assertion failed.
          Effect.ensuring(
            Effect.suspend(() =>
              deleted
                ? Effect.flatMap(Raw, (raw) =>
                    raw.insert({ streamId: stream, category, version: 2, eventType: "proj.marked", schemaVersion: 1, data: { mark: "v2" } })
                  )
                : Effect.void
            )
          )
        )
      })

      it.effect("multi-replica: fence 1 -> 2, first 5 events on one replica, next 5 on the other", () =>
        Effect.gen(function* () {
          const category = unique("order")
          const subscriptionId = unique("orders-projection-")
          const byWorker = new Map<string, number>()
          const projectionFor = (worker: string) =>
            Projection.atLeastOnce({
              subscriptionId,
              categories: [category],
              handle: () => Effect.sync(() => void byWorker.set(worker, (byWorker.get(worker) ?? 0) + 1))
            })
          const replicas = {
            "replica-A": yield* startWorker("replica-A", [projectionFor("replica-A")], fast),
            "replica-B": yield* startWorker("replica-B", [projectionFor("replica-B")], fast)
          }
          yield* waitUntil(
            Effect.map(Lease.status(subscriptionId), (s) => Option.isSome(s) && s.value.workerId !== null),
            "a leader"
          )
          const first = Option.getOrThrow(yield* Lease.status(subscriptionId))
          assert.strictEqual(first.fenceToken, 1n)
          const leader = first.workerId as keyof typeof replicas
          const follower = leader === "replica-A" ? "replica-B" : "replica-A"
          yield* appendEvents(category, 0, 5)
          yield* replicas[leader].runner.whenCaughtUp(subscriptionId)
          yield* replicas[leader].stop
          yield* waitUntil(replicas[follower].isLeader, "the follower to take over")
          const second = Option.getOrThrow(yield* Lease.status(subscriptionId))
          assert.strictEqual(second.fenceToken, 2n)
          assert.strictEqual(second.workerId, follower)
          yield* appendEvents(category, 5, 5)
          yield* replicas[follower].runner.whenCaughtUp(subscriptionId)
          assert.strictEqual(byWorker.get(leader), 5)
          assert.strictEqual(byWorker.get(follower), 5)
          yield* replicas[follower].stop
        }))

      it.effect("status: worker id, fence token, leased-until and lag", () =>
        Effect.gen(function* () {
          const category = unique("pstat")
          const subscriptionId = unique("sub-stat-")
          const gate = yield* Deferred.make<void>()
          const projection = Projection.atLeastOnce({
            subscriptionId,
            categories: [category],
            handle: () => Deferred.await(gate)
          })
          const w = yield* startWorker("stat-a", [projection], fast)
          yield* waitUntil(w.isLeader, "leader")
          yield* appendEvents(category, 0, 3)
          yield* Effect.sleep("100 millis")
          const [status] = yield* w.runner.status
          assert.strictEqual(status!.state, "leader")
          assert.strictEqual(status!.workerId, "stat-a")
          assert.strictEqual(Option.getOrThrow(status!.fenceToken), 1n)
          const lease = Option.getOrThrow(status!.lease)
          assert.strictEqual(lease.workerId, "stat-a")
          assert.isTrue(lease.leasedUntil.getTime() > Date.now() - 5_000)
          assert.strictEqual(status!.lag.events, 3)
          yield* Deferred.succeed(gate, undefined)
          yield* w.runner.whenCaughtUp(subscriptionId)
          assert.strictEqual((yield* w.runner.status)[0]!.lag.events, 0)
          yield* w.stop
          const released = Option.getOrThrow(yield* Lease.status(subscriptionId))
          assert.isTrue(released.leasedUntil.getTime() <= Date.now(), "released on scope close")
        }))

      it.effect("rebuild from scratch reports progress as it catches up", () =>
        Effect.gen(function* () {
          const category = unique("prb")
          yield* appendEvents(category, 0, 25)
          const seen: Array<string> = []
          const projection = Projection.atLeastOnce({
            subscriptionId: unique("sub-rebuild-"),
            categories: [category],
            handle: ({ recorded }) => Effect.sync(() => void seen.push(recorded.eventId))
          })
          const progress: Array<string> = []
          const result = yield* ProjectionRunner.rebuild(projection, { workerId: "rebuilder", ...fast }, (p) =>
            Effect.sync(() => void progress.push(`${p.done}/${p.total}`))
          )
          assert.deepStrictEqual(result, { done: 25, total: 25 })
          // One report per batch of at most 10. (A poll may return fewer, e.g. while another test's open
          // transaction holds the horizon between two of these appends: the exact split is not asserted.)
          assert.strictEqual(progress[0], "0/25")
          assert.strictEqual(progress.at(-1), "25/25")
          const done = progress.map((p) => Number(p.split("/")[0]))
          for (let i = 1; i < done.length; i++) {
            assert.isTrue(done[i]! > done[i - 1]! && done[i]! - done[i - 1]! <= 10, `progress ${progress.join(", ")}`)
          }
          assert.strictEqual(new Set(seen).size, 25)
        }))
    })
  })
