/**
 * Work spread across replicas on PostgreSQL: the scale-out suite (fair
 * shares, handovers, a crash, a transactional partitioned projection kept
 * exact and fenced), and what a look costs: one statement, no lock on a
 * subscription row.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { scaleOutSuite } from "@mire/core/conformance"
import * as Projection from "@mire/core/Projection"
import * as ProjectionRunner from "@mire/core/ProjectionRunner"
import * as WorkerStore from "@mire/core/WorkerStore"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import { counted } from "../../../test/statements.js"
import * as PgStatus from "../src/PgStatus.js"
import * as PgStore from "../src/PgStore.js"
import { pgRaw, pgReadModel } from "./raw.js"
import { migratedLayer } from "./utils.js"

scaleOutSuite(
  "postgres",
  Layer.mergeAll(pgReadModel, pgRaw).pipe(Layer.provideMerge(PgStore.layer), Layer.provideMerge(migratedLayer({ maxConnections: 40 })))
)

describe("PgWorkerStore", () => {
  layer(PgStore.layer.pipe(Layer.provideMerge(migratedLayer())), { excludeTestServices: true })((it) => {
    it.effect("a look is one statement: the beat, the live workers and every unit's lease, on the database's clock", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const store = yield* WorkerStore.WorkerStore
        const ids = Array.from({ length: 1000 }, (_, i) => `look-u${i}`)
        yield* sql`INSERT INTO es_subscriptions (subscription_id, worker_id, fence_token, leased_until)
                   SELECT 'look-u' || n, 'look-b', 3, now() + interval '1 hour' FROM generate_series(0, 9) n`
        const [statements, seen] = yield* counted(store.observe("look-a", Duration.seconds(30), ids))
        assert.strictEqual(statements, 1)
        assert.deepStrictEqual(
          seen.workers.map((w) => w.workerId),
          ["look-a"]
        )
        assert.strictEqual(seen.leases.length, 10, "the units that have a row")
        const lease = seen.leases.find((l) => l.subscriptionId === "look-u3")!
        assert.strictEqual(lease.workerId, "look-b")
        assert.strictEqual(lease.fenceToken, 3n)
        const [row] = yield* sql<{ now: Date }>`SELECT now() AS now`
        assert.isAtMost(Math.abs(seen.now.getTime() - row!.now.getTime()), 60_000, "the database's clock")
        // A worker of other units is not a peer: it does not see the first, nor the first it.
        const stranger = yield* store.observe("look-c", Duration.seconds(30), ["elsewhere"])
        assert.deepStrictEqual(
          stranger.workers.map((w) => w.workerId),
          ["look-c"]
        )
        // A worker of the same units sees the first as live, until it leaves.
        const other = yield* store.observe("look-b", Duration.seconds(30), ids)
        assert.deepStrictEqual(
          other.workers.map((w) => w.workerId),
          ["look-a", "look-b"]
        )
        yield* store.leave("look-a")
        const after = yield* store.observe("look-b", Duration.seconds(30), ids)
        assert.deepStrictEqual(
          after.workers.map((w) => w.workerId),
          ["look-b"]
        )
      }))

    it.effect("a worker silent for the ttl is not live; silent for 10 × ttl, its row is deleted by the next look", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const store = yield* WorkerStore.WorkerStore
        yield* sql`INSERT INTO es_workers (worker_id, started_at, heartbeat_at) VALUES
                   ('quiet', now() - interval '1 hour', now() - interval '45 seconds'),
                   ('gone', now() - interval '1 hour', now() - interval '301 seconds')`
        const seen = yield* store.observe("watcher", Duration.seconds(30), [])
        assert.deepStrictEqual(
          seen.workers.map((w) => w.workerId).filter((w) => ["quiet", "gone", "watcher"].includes(w)),
          ["watcher"]
        )
        const rows = (yield* store.workers).map((w) => w.workerId)
        assert.include(rows, "quiet")
        assert.notInclude(rows, "gone")
      }))

    it.scoped("a runner stops at once while an acquisition waits for a row locked by another session, and leads nothing after", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO es_subscriptions (subscription_id, worker_id, fence_token, leased_until, checkpointed)
                   VALUES ('blk#1of2', NULL, 0, '-infinity', false) ON CONFLICT DO NOTHING`
        // Another session holds blk#1of2's row (a long transaction, a reset: anything) until told.
        const locked = yield* Deferred.make<void>()
        const unlock = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(
          sql.withTransaction(
            sql`SELECT 1 FROM es_subscriptions WHERE subscription_id = 'blk#1of2' FOR UPDATE`.pipe(
              Effect.zipRight(Deferred.succeed(locked, undefined)),
              Effect.zipRight(Deferred.await(unlock))
            )
          )
        )
        yield* Deferred.await(locked)
        const scope = yield* Scope.make()
        yield* ProjectionRunner.run(
          [Projection.atLeastOnce({ subscriptionId: "blk", categories: ["blk"], partitions: 2, handle: () => Effect.void })],
          { workerId: "blk-x", pollInterval: "50 millis", leaseTtl: "3 seconds", leaseRecheckInterval: "100 millis" }
        ).pipe(Scope.extend(scope))
        // The runner's acquisition of blk#1of2 waits for the row lock.
        yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
                                  WHERE datname = current_database() AND wait_event_type = 'Lock'`.pipe(
          Effect.filterOrFail(([row]) => row!.n > 0),
          Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("30 seconds"))),
          Effect.orDie
        )
        const started = Date.now()
        const stopped = yield* Scope.close(scope, Exit.void).pipe(Effect.timeout("10 seconds"), Effect.option)
        assert.isTrue(stopped._tag === "Some", "the runner stopped within 10 s")
        const millis = Date.now() - started
        yield* Deferred.succeed(unlock, undefined)
        yield* holder.await
        const [row] = yield* sql<{ workerId: string | null; live: boolean }>`
          SELECT worker_id AS "workerId", leased_until > now() AS live FROM es_subscriptions WHERE subscription_id = 'blk#1of2'`
        assert.isFalse(row!.workerId === "blk-x" && row!.live, "no lease taken by the stopped runner")
        console.log(`[PgScaleOut] stopped in ${millis} ms with an acquisition waiting for a lock`)
      }))

    // Last in this database: it drops the workers table.
    it.scoped("before migration 0017 (a rolling upgrade), a runner looks alone and still leads", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DROP TABLE es_workers`
        const runner = yield* ProjectionRunner.run(
          [Projection.atLeastOnce({ subscriptionId: "unmigrated", categories: ["um"], partitions: 2, handle: () => Effect.void })],
          { workerId: "old-db", pollInterval: "50 millis", leaseRecheckInterval: "100 millis" }
        )
        yield* runner.status.pipe(
          Effect.filterOrFail((all) => all.every((s) => s.state === "leader")),
          Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("30 seconds"))),
          Effect.orDie
        )
        // Status answers on such a database too: no runner is registered there.
        const status = yield* PgStatus.status
        assert.deepStrictEqual(status.workers, [])
      }))
  })
})
