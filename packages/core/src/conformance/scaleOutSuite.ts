/**
 * Work spread across replicas, run against every store: runners share the
 * shards of partitioned projections by their fair share, hand units over at
 * batch boundaries, take a dead worker's units, and never let two leaders
 * of one shard commit.
 *
 * @since 0.2.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import type * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Scope from "effect/Scope"
import * as EventStore from "../EventStore.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import * as LeaseStore from "../LeaseStore.js"
import * as Metrics from "../Metrics.js"
import * as Projection from "../Projection.js"
import * as ProjectionRunner from "../ProjectionRunner.js"
import type * as SubscriptionStore from "../SubscriptionStore.js"
import * as WorkerStore from "../WorkerStore.js"
import { TxReadModel, unique } from "./fixtures.js"
import { waitUntil } from "./scopes.js"

type Env = EventStore.EventStore | SubscriptionStore.SubscriptionStore | LeaseStore.LeaseStore | WorkerStore.WorkerStore | TxReadModel

/** One committed transactional batch, as its worker saw it return. */
interface Commit {
  readonly unit: string
  readonly worker: string
  readonly fence: bigint
  readonly events: ReadonlyArray<readonly [stream: string, version: number]>
}

/** The events the handler handled in the current attempt of a batch (set by the lease store's wrapper). */
const currentBatch = FiberRef.unsafeMake<Array<readonly [string, number]> | undefined>(undefined)

/**
 * A worker process: a runner in its own scope over a lease store and a
 * worker store that can be frozen together, as a dead process's would be
 * (renewals and looks hang, releases are lost), or paused (frozen, and
 * every transactional batch waits in its handler until `wake`: a process
 * stalled by a long GC pause or a network partition, whose leaders go on
 * once it wakes, after others took its units). Every transactional commit
 * also writes a commit row `<run>:commit:<unit>:<fence>:<transaction id>:<position>`
 * in its own transaction (so only what committed is there), and, once it
 * returned, lands in `commits` in order. `looks` counts its looks.
 */
const startWorker = (
  run: string,
  workerId: string,
  projections: ReadonlyArray<Projection.Projection>,
  options: Omit<ProjectionRunner.Options, "workerId">,
  commits: Array<Commit>
) =>
  Effect.gen(function* () {
    const leases = yield* LeaseStore.LeaseStore
    const workers = yield* WorkerStore.WorkerStore
    const model = yield* TxReadModel
    let frozen = false
    let paused = false
    let held = 0
    let looks = 0
    const gate = yield* Deferred.make<void>()
    const hold = Effect.suspend(() =>
      paused
        ? Effect.zipRight(
            Effect.sync(() => void held++),
            Deferred.await(gate)
          )
        : Effect.void
    )
    const chaoticLeases: LeaseStore.LeaseStore = {
      ...leases,
      renew: (id, fence, ttl) => Effect.suspend(() => (frozen ? Effect.never : leases.renew(id, fence, ttl))),
      release: (id, fence) => Effect.suspend(() => (frozen ? Effect.void : leases.release(id, fence))),
      commitFenced: (id, fence, checkpoint, effect) =>
        Effect.suspend(() => {
          const batch: Array<readonly [string, number]> = []
          const mark = `${run}:commit:${id}:${fence.fenceToken}:${checkpoint.cursor.transactionId}:${checkpoint.cursor.position}`
          return leases
            .commitFenced(id, fence, checkpoint, Effect.zipRight(hold, Effect.zipLeft(Effect.locally(effect, currentBatch, batch), model.insert(mark))))
            .pipe(Effect.tap(() => Effect.sync(() => void commits.push({ unit: id, worker: workerId, fence: fence.fenceToken, events: batch }))))
        })
    }
    const chaoticWorkers: WorkerStore.WorkerStore = {
      ...workers,
      observe: (id, ttl, ids) =>
        Effect.suspend(() => {
          if (frozen) return Effect.never
          looks++
          return workers.observe(id, ttl, ids)
        }),
      leave: (id) => Effect.suspend(() => (frozen ? Effect.void : workers.leave(id)))
    }
    // A child of the test's scope: a failing test still stops its workers.
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const runner = yield* ProjectionRunner.run(projections, { ...options, workerId }).pipe(
      Effect.provideService(LeaseStore.LeaseStore, chaoticLeases),
      Effect.provideService(WorkerStore.WorkerStore, chaoticWorkers),
      Scope.extend(scope)
    )
    // What it leads by the store's leases at its last look (no statement: runner.status would read every unit's lag).
    const leads = Effect.map(runner.balance, (b) => b.workers.find((w) => w.workerId === workerId)?.leads.length ?? 0)
    return {
      workerId,
      runner,
      leads,
      looks: () => looks,
      /** A crash: no more renewals, looks or releases; then its fibers end without a trace in the store. */
      kill: Effect.zipRight(
        Effect.sync(() => {
          frozen = true
        }),
        Scope.close(scope, Exit.void)
      ),
      /** A stall: frozen as by `kill`, but its leaders go on, each holding its next batch until `wake`. */
      pause: Effect.sync(() => {
        frozen = true
        paused = true
      }),
      /** The batches held by a pause, so far. */
      held: () => held,
      /** Lets the held batches go on to their (fenced) commits. */
      wake: Deferred.succeed(gate, undefined),
      stop: Scope.close(scope, Exit.void)
    }
  })

type Worker = Effect.Effect.Success<ReturnType<typeof startWorker>>

// A ttl long enough for a loaded 2-core machine's renewals; looks often enough to rebalance within a second.
const fast = { pollInterval: "50 millis", leaseTtl: "3 seconds", leaseRecheckInterval: "200 millis", batchSize: 10 } as const

/** How many units each worker leads (by its own status), in order. */
const spread = (workers: ReadonlyArray<Worker>) => Effect.forEach(workers, (w) => w.leads)

/** Waits until every unit is led and each worker leads exactly `each` (or between `min` and `max`). */
const balanced = (workers: ReadonlyArray<Worker>, total: number, what: string, millis = 60_000) => {
  const share = Math.ceil(total / workers.length)
  return waitUntil(
    Effect.map(spread(workers), (n) => n.reduce((a, b) => a + b, 0) === total && n.every((k) => k <= share)),
    what,
    millis
  )
}

/**
 * Registers the scale-out suite: fair shares across workers, handover on
 * join, takeover after a crash, and a transactional partitioned projection
 * that stays exact and fenced through kills, joins and rebalances.
 *
 * @since 0.2.0
 * @category suites
 */
export const scaleOutSuite = (name: string, storeLayer: Layer.Layer<Env>) =>
  describe(`scale out: ${name}`, () => {
    layer(storeLayer, { timeout: "240 seconds", excludeTestServices: true })((it) => {
      it.scoped("3 workers × 2 projections of 6 shards: 4 each within a few looks; one stops: 6 each", () =>
        Effect.gen(function* () {
          const run = unique("fair")
          const commits: Array<Commit> = []
          const projections = ["a", "b"].map((p) =>
            Projection.atLeastOnce({ subscriptionId: `${run}-${p}`, categories: [run], partitions: 6, handle: () => Effect.void })
          )
          const w1 = yield* startWorker(run, `${run}-w1`, projections, fast, commits)
          const w2 = yield* startWorker(run, `${run}-w2`, projections, fast, commits)
          const w3 = yield* startWorker(run, `${run}-w3`, projections, fast, commits)
          const all = [w1, w2, w3]
          const looksAtStart = all.map((w) => w.looks())
          yield* waitUntil(
            Effect.map(spread(all), (n) => n.every((k) => k === 4)),
            "4 units each"
          )
          // "Within a few recheck intervals", counted in looks (a loaded machine only makes fewer of them).
          const looksTaken = all.map((w, i) => w.looks() - looksAtStart[i]!)
          console.log(`[scale out: ${name}] 3 workers reached 4 units each after looks ${looksTaken.join(", ")}`)
          for (const n of looksTaken) assert.isAtMost(n, 8, `looks until balanced: ${looksTaken}`)
          // The runner's own view of the spread, from its looks: every worker with the shards it leads.
          yield* waitUntil(
            Effect.map(w1.runner.balance, (b) => b.share === 4 && b.workers.map((w) => w.leads.length).join() === "4,4,4"),
            "w1's balance to show 4, 4, 4"
          )
          yield* w3.stop
          const looksAtStop = [w1, w2].map((w) => w.looks())
          yield* waitUntil(
            Effect.map(spread([w1, w2]), (n) => n.every((k) => k === 6)),
            "6 units each after one stopped"
          )
          const looksAfterStop = [w1, w2].map((w, i) => w.looks() - looksAtStop[i]!)
          for (const n of looksAfterStop) assert.isAtMost(n, 4, `looks until rebalanced: ${looksAfterStop}`)
          yield* w1.stop
          yield* w2.stop
        }))

      it.scoped(
        "4 workers × 16 shards, transactional, under writes: pause one (its stale commits refused), add one, 10 rebalances; exact, in order, fenced",
        () =>
          Effect.gen(function* () {
            const model = yield* TxReadModel
            const run = unique("chaos")
            const category = run.replace(/[^A-Za-z0-9_]/g, "_")
            const subscriptionId = `${run}-tx`
            const commits: Array<Commit> = []
            const projection = Projection.transactional({
              subscriptionId,
              categories: [category],
              partitions: 16,
              handle: ({ recorded }) =>
                Effect.gen(function* () {
                  yield* model.insert(`${run}:ev:${recorded.streamId}:${recorded.streamVersion}`)
                  const batch = yield* FiberRef.get(currentBatch)
                  batch?.push([recorded.streamId, recorded.streamVersion])
                })
            })
            const handoversBefore = (yield* Metric.value(Metrics.leaseHandovers)).count
            const start = (n: number) => startWorker(run, `${run}-w${n}`, [projection], fast, commits)
            let live = [yield* start(1), yield* start(2), yield* start(3), yield* start(4)]
            yield* balanced(live, 16, "16 shards over 4 workers")

            // Continuous writes: 4 writers over 50 streams each, one-event appends, until told to stop.
            let appended = 0
            let writing = true
            const writerOf = (w: number) => {
              let n = 0
              const appendNext = Effect.suspend(() =>
                EventStore.append(`${category}-w${w}s${n % 50}`, category, ExpectedVersion.Any, [
                  { eventType: "chaos.tick", schemaVersion: 1, data: { n } }
                ]).pipe(
                  Effect.tap(() =>
                    Effect.sync(() => {
                      n++
                      appended++
                    })
                  )
                )
              )
              return Effect.whileLoop({
                while: () => writing,
                body: () => Effect.zipRight(Effect.repeatN(appendNext, 3), Effect.sleep("5 millis")),
                step: () => {}
              })
            }
            const writer = yield* Effect.fork(Effect.all([0, 1, 2, 3].map(writerOf), { concurrency: "unbounded", discard: true }))
            yield* Effect.sleep("300 millis")

            // A stall: w1 stops renewing and looking, but its leaders go on, each holding its next batch in
            // its handler; its shards go to the others (a higher fence) within ttl + recheck. Then it wakes:
            // every batch it held is refused by the fence at its commit.
            const refusalsBefore = (yield* Metric.value(Metrics.fenceRefusals)).count
            const [zombie, ...rest] = live
            yield* zombie!.pause
            live = rest
            yield* balanced(live, 16, "16 shards over 3 workers after a stall")
            yield* waitUntil(
              Effect.sync(() => zombie!.held() > 0),
              "the stalled worker to hold a batch"
            )
            const heldBatches = zombie!.held()
            const commitsBeforeWake = commits.length
            yield* zombie!.wake
            yield* waitUntil(
              Effect.map(Metric.value(Metrics.fenceRefusals), (m) => m.count - refusalsBefore >= heldBatches),
              "every batch held by the stalled worker to be refused by its fence"
            )
            yield* zombie!.stop
            assert.isFalse(
              commits.slice(commitsBeforeWake).some((c) => c.worker === zombie!.workerId),
              "a stalled worker committed after others took its shards"
            )

            // A join: the others hand shards over at batch boundaries.
            live = [...live, yield* start(5)]
            yield* balanced(live, 16, "16 shards over 4 workers after a join")

            // 10 rebalances: a worker joins (handovers), then leaves cleanly (releases), 5 times.
            for (let i = 0; i < 5; i++) {
              const extra = yield* start(10 + i)
              yield* balanced([...live, extra], 16, `rebalance ${2 * i + 1}: a join`)
              yield* extra.stop
              yield* balanced(live, 16, `rebalance ${2 * i + 2}: a leave`)
            }

            writing = false
            yield* Fiber.join(writer)
            yield* live[0]!.runner.whenCaughtUp(subscriptionId, "120 seconds")

            // The read model equals the events, exactly: every (stream, version) once.
            const rows = yield* model.rows(`${run}:ev:`)
            assert.strictEqual(rows.length, appended, "one row per event")
            assert.strictEqual(new Set(rows).size, appended, "no event twice")
            const perStream = new Map<string, number>()
            for (const row of rows) {
              const [, , stream, version] = row.split(":")
              perStream.set(stream!, Math.max(perStream.get(stream!) ?? 0, Number(version)))
            }
            assert.strictEqual(
              Array.from(perStream.values()).reduce((a, b) => a + b, 0),
              appended,
              "versions 1…n of every stream"
            )

            // Every stream's versions arrived in order, across every handover (commits in the order they returned).
            const last = new Map<string, number>()
            for (const commit of commits) {
              for (const [stream, version] of commit.events) {
                assert.strictEqual(version, (last.get(stream) ?? 0) + 1, `${stream} v${version} after v${last.get(stream) ?? 0}`)
                last.set(stream, version)
              }
            }

            // Fencing: per shard, in checkpoint order, the committed fence tokens never go back, and one
            // token is one worker: no shard ever had two leaders committing.
            const marks = (yield* model.rows(`${run}:commit:`)).map((row) => {
              const [, , unit, fence, xid, position] = row.split(":")
              return { unit: unit!, fence: BigInt(fence!), xid: BigInt(xid!), position: BigInt(position!) }
            })
            assert.strictEqual(marks.length, commits.length, "every committed batch has its commit row")
            const byUnit = new Map<string, Array<(typeof marks)[number]>>()
            for (const m of marks) byUnit.set(m.unit, [...(byUnit.get(m.unit) ?? []), m])
            assert.isAtLeast(byUnit.size, 12, "most shards committed")
            for (const [unit, list] of byUnit) {
              list.sort((a, b) => (a.xid !== b.xid ? (a.xid < b.xid ? -1 : 1) : a.position < b.position ? -1 : a.position > b.position ? 1 : 0))
              for (let i = 1; i < list.length; i++) {
                assert.isTrue(list[i]!.fence >= list[i - 1]!.fence, `${unit}: fence ${list[i]!.fence} committed after ${list[i - 1]!.fence}`)
              }
            }
            const holders = new Map<string, string>()
            for (const c of commits) {
              const key = `${c.unit}:${c.fence}`
              assert.strictEqual(holders.get(key) ?? c.worker, c.worker, `${key} committed by two workers`)
              holders.set(key, c.worker)
            }
            const handovers = (yield* Metric.value(Metrics.leaseHandovers)).count - handoversBefore
            console.log(
              `[scale out: ${name}] ${appended} events, ${commits.length} commits, ${new Set(holders.keys()).size} leaderships, ${handovers} handovers`
            )
            // Every join takes its share by handovers (on a loaded machine a few come from leases that lapsed instead).
            assert.isAtLeast(handovers, 1, "joins were served by handovers")
            yield* Effect.forEach(live, (w) => w.stop, { discard: true })
          }),
        { timeout: 240_000 }
      )

      it.scoped("a runner's looks take no lease while every unit is held (no herd)", () =>
        Effect.gen(function* () {
          const run = unique("herd")
          const commits: Array<Commit> = []
          const projection = Projection.atLeastOnce({ subscriptionId: `${run}-p`, categories: [run], partitions: 8, handle: () => Effect.void })
          const leases = yield* LeaseStore.LeaseStore
          let attempts = 0
          const counting: LeaseStore.LeaseStore = {
            ...leases,
            acquire: (id, worker, ttl) => Effect.zipRight(Effect.sync(() => void attempts++), leases.acquire(id, worker, ttl))
          }
          const workers = yield* Effect.forEach([1, 2, 3, 4], (n) =>
            startWorker(run, `${run}-w${n}`, [projection], fast, commits).pipe(Effect.provideService(LeaseStore.LeaseStore, counting))
          )
          yield* balanced(workers, 8, "8 shards over 4 workers")
          const before = attempts
          const looksBefore = workers.map((w) => w.looks())
          yield* waitUntil(
            Effect.sync(() => workers.every((w, i) => w.looks() - looksBefore[i]! >= 10)),
            "10 more looks each"
          )
          assert.strictEqual(attempts - before, 0, "no acquisition attempt in steady state")
          yield* Effect.forEach(workers, (w) => w.stop, { discard: true })
        }))

      it.scoped("runners of other projections on one store are not peers: both make progress", () =>
        Effect.gen(function* () {
          const run = unique("disjoint")
          const category = run.replace(/[^A-Za-z0-9_]/g, "_")
          const commits: Array<Commit> = []
          const of = (name: string, partitions?: number) =>
            Projection.atLeastOnce({ subscriptionId: `${run}-${name}`, categories: [category], partitions, handle: () => Effect.void })
          // Two services on one database: "orders" runs two projections, "billing" one of 4 shards.
          const orders = yield* startWorker(run, `${run}-orders`, [of("totals"), of("search")], fast, commits)
          const billing = yield* startWorker(run, `${run}-billing`, [of("invoices", 4)], fast, commits)
          yield* EventStore.append(`${category}-1`, category, ExpectedVersion.Any, [
            { eventType: "disjoint.tick", schemaVersion: 1, data: {} },
            { eventType: "disjoint.tick", schemaVersion: 1, data: {} }
          ])
          // Each sees only itself as a peer: its share is all it runs.
          yield* waitUntil(
            Effect.map(
              Effect.all([orders.runner.balance, billing.runner.balance]),
              ([o, b]) => o.share === 2 && b.share === 4 && o.workers.length === 1 && b.workers.length === 1
            ),
            "each runner to count only itself"
          )
          yield* orders.runner.whenCaughtUp(`${run}-totals`, "30 seconds")
          yield* orders.runner.whenCaughtUp(`${run}-search`, "30 seconds")
          yield* billing.runner.whenCaughtUp(`${run}-invoices`, "30 seconds")
          yield* waitUntil(
            Effect.map(Effect.all([orders.leads, billing.leads]), ([o, b]) => o === 2 && b === 4),
            "orders to lead 2 units and billing 4"
          )
          yield* orders.stop
          yield* billing.stop
        }))

      it.scoped("a leader with a backlog hands over at its next batch boundary when a worker joins; none handled twice", () =>
        Effect.gen(function* () {
          const run = unique("backlog")
          const category = run.replace(/[^A-Za-z0-9_]/g, "_")
          const commits: Array<Commit> = []
          const total = 1200
          const times = new Map<string, number>()
          const projection = Projection.atLeastOnce({
            subscriptionId: `${run}-p`,
            categories: [category],
            partitions: 2,
            handle: ({ recorded }) =>
              Effect.zipRight(
                Effect.sleep("10 millis"),
                Effect.sync(() => {
                  const key = `${recorded.streamId}:${recorded.streamVersion}`
                  times.set(key, (times.get(key) ?? 0) + 1)
                })
              )
          })
          yield* Effect.forEach(
            Array.from({ length: 40 }, (_, i) => i),
            (i) =>
              EventStore.append(
                `${category}-s${i}`,
                category,
                ExpectedVersion.Any,
                Array.from({ length: total / 40 }, (_, n) => ({ eventType: "backlog.tick", schemaVersion: 1, data: { n } }))
              ),
            { discard: true }
          )
          const a = yield* startWorker(run, `${run}-a`, [projection], fast, commits)
          yield* waitUntil(
            Effect.map(a.leads, (n) => n === 2),
            "a to lead both shards"
          )
          const b = yield* startWorker(run, `${run}-b`, [projection], fast, commits)
          yield* waitUntil(
            Effect.map(b.leads, (n) => n === 1),
            "b to lead a shard",
            60_000
          )
          const handled = times.size
          console.log(`[scale out: ${name}] b took a shard with ${handled} of ${total} events handled`)
          assert.isBelow(handled, total, "a handed a shard over while behind")
          yield* a.runner.whenCaughtUp(`${run}-p`, "60 seconds")
          yield* b.runner.whenCaughtUp(`${run}-p`, "60 seconds")
          assert.strictEqual(times.size, total, "every event handled")
          const twice = Array.from(times).filter(([, n]) => n > 1)
          assert.deepStrictEqual(twice, [], "a handover at a batch boundary handles nothing twice")
          yield* a.stop
          yield* b.stop
        }))

      it.scoped("a stopping runner does not wait for an acquisition in flight", () =>
        Effect.gen(function* () {
          const run = unique("stuck")
          const commits: Array<Commit> = []
          const projection = Projection.atLeastOnce({ subscriptionId: `${run}-p`, categories: [run], partitions: 2, handle: () => Effect.void })
          const leases = yield* LeaseStore.LeaseStore
          let stuck = false
          // One shard's acquisition never returns (a row locked by another session, a pool exhausted).
          const blocking: LeaseStore.LeaseStore = {
            ...leases,
            acquire: (id, worker, ttl) =>
              id.endsWith("#1of2")
                ? Effect.zipRight(
                    Effect.sync(() => {
                      stuck = true
                    }),
                    Effect.never
                  )
                : leases.acquire(id, worker, ttl)
          }
          const w = yield* startWorker(run, `${run}-w`, [projection], fast, commits).pipe(
            Effect.provideService(LeaseStore.LeaseStore, blocking)
          )
          yield* waitUntil(
            Effect.sync(() => stuck),
            "the acquisition to hang"
          )
          const stopped = yield* w.stop.pipe(Effect.timeout("10 seconds"), Effect.option)
          assert.isTrue(stopped._tag === "Some", "the runner stopped within 10 s")
        }))

      it.scoped("a recheck interval longer than the ttl does not make workers flap dead and alive", () =>
        Effect.gen(function* () {
          const run = unique("flap")
          const commits: Array<Commit> = []
          const projection = Projection.atLeastOnce({ subscriptionId: `${run}-p`, categories: [run], partitions: 4, handle: () => Effect.void })
          const slow = { pollInterval: "100 millis", leaseTtl: "1 second", leaseRecheckInterval: "1500 millis" } as const
          const a = yield* startWorker(run, `${run}-a`, [projection], slow, commits)
          const b = yield* startWorker(run, `${run}-b`, [projection], slow, commits)
          yield* balanced([a, b], 4, "4 shards over 2 workers", 30_000)
          // Over 4 looks each, both keep counting the other live: a share of 2, never 4.
          const shares = new Set<number>()
          const until = Date.now() + 6_000
          while (Date.now() < until) {
            for (const w of [a, b]) shares.add((yield* w.runner.balance).share)
            yield* Effect.sleep("100 millis")
          }
          assert.deepStrictEqual(Array.from(shares), [2], "the share seen by both workers")
          yield* a.stop
          yield* b.stop
        }))
    })
  })
