/**
 * Work spread across replicas (issue 15): throughput of a partitioned
 * projection with 1, 2 and 4 workers, and what the coordination costs at
 * rest.
 *
 * How to run:
 *
 *   node --conditions=@mire/source --import tsx bench/scaleout.ts              # 1,600 events, 3 rounds
 *   node --conditions=@mire/source --import tsx bench/scaleout.ts 800 1        # 800 events, 1 round
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test node --conditions=@mire/source --import tsx bench/scaleout.ts
 *
 * Without `DATABASE_URL` it starts an embedded PostgreSQL. In a fresh
 * database:
 *
 * 1. Throughput: a projection of 8 partitions whose handler spends 5 ms per
 *    event of simulated I/O (`SELECT pg_sleep(0.005)` through the worker's
 *    own pool), at-least-once, batches of 100. For W = 1, 2, 4 workers, each
 *    a `ProjectionRunner` over a pool of its own (2 connections: a worker's
 *    capacity for I/O), under a new category: the workers start,
 *    their shards settle (each leads 8 ÷ W), then N events (in 400 streams)
 *    are inserted by one plain SQL statement and the clock runs until the
 *    handlers have handled every event (counted in process: polling the lag
 *    through a worker's pool would compete with its handler). It prints events/s per W (the median of the rounds,
 *    with the spread) and the speed-up over W = 1 (within each round, since a
 *    shared host's load moves between rounds; the median of the rounds).
 * 2. Cost at rest: 10 workers (pools of their own) run 20 projections × 10
 *    partitions (200 units), idle, with a 1 s recheck and a 3 s lease (the
 *    defaults are 5 s and 30 s). Over 10 s it counts the transactions (`xact_commit`) all
 *    runners send, and the row updates of `es_subscriptions`
 *    (`pg_stat_user_tables`: each an UPDATE's row lock), per second; and
 *    prints what the same fleet cost before this change, when every standby
 *    tried every lease at every recheck.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Projection from "@mire/core/Projection"
import * as ProjectionRunner from "@mire/core/ProjectionRunner"
import * as PgMigrations from "@mire/pg/PgMigrations"
import * as PgStore from "@mire/pg/PgStore"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import { admin, withDatabase } from "../test/database.js"
import { startEmbedded } from "../test/embeddedPostgres.js"

const events = Number(process.argv[2] ?? 1600)
const rounds = Number(process.argv[3] ?? 3)
const category = "bench"
/** Connections per worker. */
const poolSize = 2

const servicesOf = (url: string, maxConnections: number) =>
  PgStore.layer.pipe(Layer.provideMerge(PgClient.layer({ url: Redacted.make(url), maxConnections })))

/** W runners, each over its own pool, in one scope. */
const startWorkers = <R>(
  url: string,
  count: number,
  projections: ReadonlyArray<Projection.Projection<R>>,
  options: Omit<ProjectionRunner.Options, "workerId">,
  scope: Scope.Scope
) =>
  Effect.forEach(Array.from({ length: count }, (_, i) => `w${i + 1}`), (workerId) =>
    Effect.gen(function* () {
      const services = yield* Layer.buildWithScope(servicesOf(url, poolSize), scope)
      return yield* ProjectionRunner.run(projections, { ...options, workerId }).pipe(Effect.provide(services), Scope.extend(scope))
    })
  )

const settled = (runners: ReadonlyArray<ProjectionRunner.ProjectionRunner>, units: number) =>
  Effect.forEach(runners, (r) => r.balance).pipe(
    Effect.filterOrFail((bs) =>
      bs.every((b, i) => (b.workers.find((w) => w.workerId === `w${i + 1}`)?.leads.length ?? 0) === units / runners.length)
    ),
    Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("60 seconds"))),
    Effect.orDie
  )

const throughput = (url: string, workers: number, round: number) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const scope = yield* Scope.make()
    // The end is seen in process (every event handled), not by polling the lag through a runner's pool,
    // which would compete with its own handler (8 shards' polls for W = 1, only 2 for W = 4).
    let handled = 0
    const projection = Projection.atLeastOnce({
      subscriptionId: `tp-${workers}-${round}-${Date.now().toString(36)}`,
      categories: [`${category}_r${round}w${workers}`],
      partitions: 8,
      // The simulated I/O goes through the worker's own pool: a worker's connections are its capacity.
      handle: () =>
        Effect.flatMap(SqlClient.SqlClient, (db) => db`SELECT pg_sleep(0.005)`).pipe(
          Effect.tap(() =>
            Effect.sync(() => {
              handled++
            })
          )
        )
    })
    const runners = yield* startWorkers(url, workers, [projection], { pollInterval: "100 millis", leaseRecheckInterval: "500 millis", batchSize: 100 }, scope)
    yield* settled(runners, 8)
    const started = performance.now()
    yield* sql`
      INSERT INTO es_events (event_id, stream_id, stream_version, category, event_type, data)
      SELECT gen_random_uuid(), ${`${category}_r${round}w${workers}-s`} || (g % 400), g / 400 + 1, ${`${category}_r${round}w${workers}`},
             'bench.e', '{}'::jsonb
      FROM generate_series(0, ${events - 1}) g`
    yield* Effect.sync(() => handled >= events).pipe(
      Effect.repeat({ until: (done) => done, schedule: Schedule.spaced("10 millis") }),
      Effect.timeoutFail({ duration: "600 seconds", onTimeout: () => new Error(`${handled} of ${events} events handled in 600 s`) }),
      Effect.orDie
    )
    const seconds = (performance.now() - started) / 1000
    // Not timed: every shard's checkpoint follows its last batch.
    yield* runners[0]!.whenCaughtUp(projection.subscriptionId, "600 seconds")
    yield* Scope.close(scope, Exit.void)
    return events / seconds
  })

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const atRest = (url: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const scope = yield* Scope.make()
    const projections = Array.from({ length: 20 }, (_, p) =>
      Projection.atLeastOnce({ subscriptionId: `rest-${p}`, categories: ["rest"], partitions: 10, handle: () => Effect.void })
    )
    const workers = 10
    const options = { leaseRecheckInterval: "1 second", leaseTtl: "3 seconds" } as const
    const runners = yield* startWorkers(url, workers, projections, options, scope)
    yield* settled(runners, 200)
    const counters = sql<{ updates: string; xacts: string }>`
      SELECT (SELECT (n_tup_upd + n_tup_ins)::text FROM pg_stat_user_tables WHERE relname = 'es_subscriptions') AS updates,
             (SELECT xact_commit::text FROM pg_stat_database WHERE datname = current_database()) AS xacts`.pipe(
      Effect.map((rows) => ({ updates: Number(rows[0]!.updates), xacts: Number(rows[0]!.xacts) }))
    )
    // Statistics reach the views when a backend flushes them (at most about a second late): read them around a
    // 10 s window, each read in a fresh statistics snapshot.
    const window = 10
    const read = Effect.zipRight(sql`SELECT pg_stat_clear_snapshot()`, counters)
    yield* Effect.sleep("2 seconds")
    const before = yield* read
    yield* Effect.sleep(`${window} seconds`)
    const after = yield* read
    yield* Scope.close(scope, Exit.void)
    return {
      workers,
      units: 200,
      rowUpdatesPerSecond: (after.updates - before.updates) / window,
      transactionsPerSecond: (after.xacts - before.xacts) / window
    }
  })

const main = Effect.gen(function* () {
  const embedded = process.env.DATABASE_URL ? undefined : yield* Effect.promise(() => startEmbedded())
  const server = process.env.DATABASE_URL ?? embedded!.url
  const name = `bench_scaleout_${Date.now().toString(36)}`
  yield* Effect.promise(() => admin(server, `CREATE DATABASE ${name}`))
  const url = withDatabase(server, name)
  const layer = Layer.effectDiscard(PgMigrations.migrate().pipe(Effect.orDie)).pipe(Layer.provideMerge(servicesOf(url, 4)))
  yield* Effect.gen(function* () {
    const rates = new Map<number, Array<number>>()
    for (let round = 0; round < rounds; round++) {
      for (const workers of [1, 2, 4]) {
        const rate = yield* throughput(url, workers, round)
        rates.set(workers, [...(rates.get(workers) ?? []), rate])
        console.log(`round ${round + 1}: ${workers} worker(s): ${Math.round(rate)} events/s`)
      }
    }
    // The host's load moves between rounds: the speed-up is taken within each round (W workers ÷ 1 worker of
    // the same round), then its median.
    const base = rates.get(1)!
    for (const [workers, rs] of rates) {
      const speedups = rs.map((r, i) => r / base[i]!)
      console.log(
        `${workers} worker(s) over 8 partitions, 5 ms/event: median ${Math.round(median(rs))} events/s ` +
          `(${Math.round(Math.min(...rs))}–${Math.round(Math.max(...rs))}), ${median(speedups).toFixed(2)}x over 1 worker ` +
          `(per round: ${speedups.map((x) => x.toFixed(2)).join(", ")})`
      )
    }
    const rest = yield* atRest(url)
    console.log(
      `at rest: ${rest.workers} workers × ${rest.units} units: ${rest.rowUpdatesPerSecond.toFixed(1)} es_subscriptions row updates/s ` +
        `(lease renewals: ${rest.units} units ÷ 1 s heartbeat = ${rest.units}/s expected; looks take none); ` +
        `${rest.transactionsPerSecond.toFixed(0)} transactions/s in all (idle polls of 200 leaders at 1/s, renewals, ${rest.workers} looks/s)`
    )
    console.log(
      `before this change the same fleet's standbys would also try every lease every recheck: ` +
        `${(rest.workers - 1) * rest.units}/s conditional upserts on es_subscriptions, each locking its row`
    )
  }).pipe(Effect.provide(layer), Effect.orDie)
  yield* Effect.promise(() => admin(server, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  if (embedded !== undefined) yield* Effect.promise(() => embedded.stop())
})

Effect.runPromise(main).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
