/**
 * # Pattern: Scaling out (`scale_out`)
 *
 * **Why this pattern exists.** One replica leading a projection is a
 * ceiling: its handler's throughput is the projection's. A projection
 * declared with `partitions: K` runs as K shards (each stream's events in
 * one shard, in order), and the runners of every replica **spread the
 * shards of all projections across themselves**: each live worker aims
 * for its fair share, `⌈shards ÷ live workers⌉`. A worker above its share
 * hands a shard over at a batch boundary (after the batch's checkpoint,
 * never inside a batch); a worker below it acquires free ones. Workers find
 * each other through a heartbeat row per runner (`es_workers`, on the
 * database's clock); there are no advisory locks, so it works behind
 * PgBouncer, and a standby does not contend for leases it will not get.
 *
 * This example runs three replicas in one process, each a runner over its
 * own connection pool, in its own `Scope` (separate pods in production).
 * Expected: replica A starts alone and leads all 6 shards; B and C join and
 * A hands shards over until each leads 2; 30 orders handled across all three;
 * then replica C stops (closing its scope releases its leases), and A and
 * B take over its shards, 3 each, and handle 30 more orders. The read model
 * (the last version seen per order) is complete at the end.
 *
 * Run: `npm run example -- scale_out`
 *
 * @since 0.2.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { Aggregate, AggregateRoot, EventStore, Projection, ProjectionRunner } from "@mire/core"
import { PgStore } from "@mire/pg"
import { Console, Effect, Either, Exit, Layer, Ref, Schedule, Schema, Scope } from "effect"

/**
 * @since 0.2.0
 * @category events
 */
export const Placed = Schema.TaggedStruct("Placed", { amount: Schema.Int.pipe(Schema.positive()) })

/**
 * The order aggregate, in a category of its own per run (so reruns start clean).
 *
 * @since 0.2.0
 * @category aggregates
 */
export const makeOrder = (category: string) =>
  Aggregate.make({ category, events: Placed, initial: { amount: 0 }, apply: (state, event) => ({ amount: state.amount + event.amount }) })

/**
 * The replicas' runner options: a short lease and recheck, so the demo
 * moves within seconds. The defaults are a 30 s lease and a 5 s recheck.
 *
 * @since 0.2.0
 */
export const runnerOptions = { pollInterval: "50 millis", leaseTtl: "3 seconds", leaseRecheckInterval: "300 millis" } as const

/** The read model: the last version handled per order stream (an idempotent, version-guarded upsert). */
type ReadModel = Ref.Ref<ReadonlyMap<string, number>>

/**
 * One replica: mire's services over a pool of its own (up to 4
 * connections), and a runner of the partitioned projection, in its own scope.
 *
 * @since 0.2.0
 */
export const startReplica = (
  workerId: string,
  projection: Projection.Projection,
  config: PgClient.PgClientConfig
) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const services = yield* Layer.buildWithScope(
      PgStore.layer.pipe(Layer.provideMerge(PgClient.layer({ ...config, maxConnections: 4 }))),
      scope
    )
    const runner = yield* ProjectionRunner.run([projection], { ...runnerOptions, workerId }).pipe(
      Effect.provide(services),
      Scope.extend(scope)
    )
    return { workerId, runner, stop: Scope.close(scope, Exit.void) }
  })

type Replica = Effect.Effect.Success<ReturnType<typeof startReplica>>

/** Each replica's shards, from the runners' own looks at the leases. */
const distribution = (replicas: ReadonlyArray<Replica>) =>
  Effect.map(replicas[0]!.runner.balance, (balance) =>
    replicas.map((r) => ({
      workerId: r.workerId,
      leads: balance.workers.find((w) => w.workerId === r.workerId)?.leads ?? []
    }))
  )

/** Waits (polling, 100 ms apart, at most 60 s) until every replica leads `each` shards. */
const settled = (replicas: ReadonlyArray<Replica>, each: number) =>
  distribution(replicas).pipe(
    Effect.filterOrFail((d) => d.every((r) => r.leads.length === each)),
    Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("60 seconds"))),
    Effect.orDieWith(() => new Error(`the shards did not settle at ${each} per replica`))
  )

const printDistribution = (title: string, d: ReadonlyArray<{ readonly workerId: string; readonly leads: ReadonlyArray<string> }>) =>
  Effect.zipRight(
    Console.log(title),
    Effect.forEach(d, (r) => Console.log(`  ${r.workerId} leads ${r.leads.length}: ${r.leads.map((id) => id.slice(id.indexOf("#"))).join(" ")}`), {
      discard: true
    })
  )

/**
 * Three replicas share a 6-shard projection; one stops; the others take over.
 *
 * @since 0.2.0
 */
export const program = Effect.scoped(
  Effect.gen(function* () {
    const run = crypto.randomUUID().slice(0, 8)
    const order = makeOrder(`order_${run}`)
    const readModel: ReadModel = yield* Ref.make<ReadonlyMap<string, number>>(new Map())
    const handledBy = yield* Ref.make<ReadonlyMap<string, number>>(new Map())
    const orders = Projection.atLeastOnce({
      subscriptionId: `orders-${run}`,
      aggregate: order,
      partitions: 6,
      handle: ({ recorded }) =>
        Ref.update(readModel, (m) =>
          (m.get(recorded.streamId) ?? 0) >= recorded.streamVersion ? m : new Map(m).set(recorded.streamId, recorded.streamVersion)
        )
    })
    // Every replica runs the same projection; the handler also counts which replica handled what.
    const countedBy = (workerId: string): Projection.Projection => ({
      ...orders,
      process: (event) =>
        Either.map(orders.process(event), (handle) =>
          Effect.zipRight(handle, Ref.update(handledBy, (m) => new Map(m).set(workerId, (m.get(workerId) ?? 0) + 1)))
        )
    })
    const config = (yield* PgClient.PgClient).config
    // replica-A starts alone and leads every shard (its first polls build the shard index once).
    const a = yield* startReplica("replica-A", countedBy("replica-A"), config)
    yield* printDistribution("--- replica-A alone, 6 shards ---", yield* settled([a], 6))
    // B and C join: A hands shards over at batch boundaries until each leads its fair share, ⌈6 ÷ 3⌉ = 2.
    const [b, c] = yield* Effect.forEach(["replica-B", "replica-C"], (id) => startReplica(id, countedBy(id), config))
    const all = [a, b!, c!]
    yield* printDistribution("--- 3 replicas, 6 shards ---", yield* settled(all, 2))
    const place = (from: number) =>
      Effect.forEach(
        Array.from({ length: 30 }, (_, i) => from + i),
        (i) =>
          EventStore.loadOrDefault(order, `o${i}`).pipe(
            Effect.map((root) => AggregateRoot.record(root, Placed.make({ amount: 10 * (i + 1) }))),
            Effect.flatMap(EventStore.save)
          ),
        { discard: true, concurrency: 4 }
      )
    yield* place(0)
    yield* a.runner.whenCaughtUp(orders.subscriptionId)
    const first = yield* Ref.get(handledBy)
    yield* Console.log(`30 orders handled: ${all.map((r) => `${r.workerId.slice(-1)}=${first.get(r.workerId) ?? 0}`).join(", ")}`)

    yield* Console.log("--- replica-C stops (its scope closes: its leases are released) ---")
    yield* c!.stop
    yield* printDistribution("--- 2 replicas, 6 shards ---", yield* settled([a, b!], 3))
    yield* place(30)
    yield* a.runner.whenCaughtUp(orders.subscriptionId)
    const second = yield* Ref.get(handledBy)
    yield* Console.log(
      `30 more handled: ${[a, b!, c!].map((r) => `${r.workerId.slice(-1)}=${(second.get(r.workerId) ?? 0) - (first.get(r.workerId) ?? 0)}`).join(", ")}`
    )
    const model = yield* Ref.get(readModel)
    const complete = Array.from({ length: 60 }, (_, i) => `order_${run}-o${i}`).every((id) => model.get(id) === 1)
    yield* Console.log(`read model: ${model.size} orders, ${complete ? "complete" : "INCOMPLETE"}`)
  })
)
