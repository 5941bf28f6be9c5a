/**
 * # Pattern: Multi-replica deployment (`multi_replica`)
 *
 * **Why this pattern exists.** Every production service runs more than one
 * replica. Without coordination, every replica's `ProjectionRunner` would
 * process every event: duplicate work and read-model contention. With
 * mire's leases, **exactly one replica leads** each subscription at any
 * moment, and when the leader dies another takes over: at once when it shut
 * down cleanly (closing its scope releases the lease), and within
 * `leaseTtl + leaseRecheckInterval` when it crashed without releasing.
 *
 * No coordination service is needed: the lease is a row in PostgreSQL (the
 * database you already have), and no advisory locks are used, so it works
 * behind PgBouncer and RDS Proxy. Every acquisition bumps a fence token, and
 * every checkpoint (and every transactional handler's transaction) commits
 * only while the writer's token is still current, so a paused leader that
 * wakes after a takeover cannot clobber its successor's progress.
 *
 * This example runs two replicas in one process, each runner in its own
 * `Scope` (they would be separate pods in production; the lease mechanics
 * are the same). Expected: one replica acquires first and handles 5 events;
 * we kill it (close its scope); the other takes over with the fence token
 * bumped from 1 to 2 and handles the next 5.
 *
 * Delivery is **effectively once in the happy path, at least once under
 * failover**: a leader superseded mid-batch may already have applied events
 * that its successor, resuming from the last checkpoint, applies again.
 * Handlers must be idempotent, or transactional (see `projection`).
 *
 * Run: `npm run example -- multi_replica`
 *
 * @since 0.1.0
 */
import { Aggregate, AggregateRoot, EventStore, Lease, Projection, ProjectionRunner } from "@mire/core"
import { Console, Effect, Exit, Option, Ref, Schema, Scope } from "effect"

/**
 * @since 0.1.0
 * @category events
 */
export const Placed = Schema.TaggedStruct("Placed", { amount: Schema.Int.pipe(Schema.positive()) })

/**
 * @since 0.1.0
 * @category models
 */
export interface Order {
  readonly amount: number
}

const initial: Order = { amount: 0 }

/**
 * The order aggregate, in streams `<category>-<id>`.
 *
 * The example takes a fresh category per run: a new subscription starts at
 * the beginning of its category, and earlier runs' orders would blur the
 * counts. In production the category is fixed (`order`).
 *
 * @since 0.1.0
 * @category aggregates
 */
export const makeOrder = (category: string) =>
  Aggregate.make({
    category,
    events: Placed,
    initial,
    apply: (state, event): Order => ({ amount: state.amount + event.amount })
  })

/**
 * @since 0.1.0
 * @category aggregates
 */
export type OrderAggregate = ReturnType<typeof makeOrder>

/**
 * The replicas' runner options: a short lease, so failover shows within a
 * demo's time scale. The defaults are a 30 s lease and a 5 s recheck.
 *
 * @since 0.1.0
 */
export const runnerOptions = {
  pollInterval: "50 millis",
  leaseTtl: "3 seconds",
  leaseRecheckInterval: "500 millis"
} as const

/**
 * One replica: a runner in its own scope (closing it kills the replica),
 * with a handler that prints which replica handled each event.
 *
 * @since 0.1.0
 */
export const startReplica = (workerId: string, subscriptionId: string, order: OrderAggregate) =>
  Effect.gen(function* () {
    const handled = yield* Ref.make(0)
    // In real code the handler writes a read model; the print is the demo.
    const projection = Projection.atLeastOnce({
      subscriptionId,
      aggregate: order,
      handle: ({ event, recorded }) =>
        Ref.updateAndGet(handled, (n) => n + 1).pipe(
          Effect.flatMap((n) =>
            Console.log(`  [${workerId}] handled event #${n} (amount=${event.amount}) on ${recorded.streamId}`)
          )
        )
    })
    const scope = yield* Scope.make()
    // Whatever happens, the replica stops when the example ends.
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const runner = yield* ProjectionRunner.run([projection], { ...runnerOptions, workerId }).pipe(Scope.extend(scope))
    return { workerId, runner, handled: Ref.get(handled), kill: Scope.close(scope, Exit.void) }
  })

/** Polls the lease until `holds` accepts a live holder, or dies after `millis`. */
const awaitHolder = (subscriptionId: string, holds: (workerId: string) => boolean, millis = 15_000) =>
  Effect.gen(function* () {
    const deadline = Date.now() + millis
    for (;;) {
      const lease = yield* Lease.status(subscriptionId)
      if (
        Option.isSome(lease) &&
        lease.value.workerId !== null &&
        lease.value.leasedUntil.getTime() > Date.now() &&
        holds(lease.value.workerId)
      ) {
        return lease.value
      }
      if (Date.now() > deadline) return yield* Effect.dieMessage(`no lease holder on ${subscriptionId} after ${millis} ms`)
      yield* Effect.sleep("50 millis")
    }
  })

/** Places `n` orders of $100 × (from + i + 1), one stream each. */
const placeOrders = (order: OrderAggregate, from: number, n: number) =>
  Effect.forEach(
    Array.from({ length: n }, (_, i) => from + i),
    (i) =>
      EventStore.loadOrDefault(order, crypto.randomUUID()).pipe(
        Effect.map((root) => AggregateRoot.record(root, Placed.make({ amount: 100 * (i + 1) }))),
        Effect.flatMap(EventStore.save)
      ),
    { discard: true }
  )

/**
 * Two replicas, 5 orders, the leader killed, 5 more orders.
 *
 * @since 0.1.0
 */
export const program = Effect.scoped(
  Effect.gen(function* () {
    // A unique subscription id and category per run, so reruns do not collide.
    const run = crypto.randomUUID().slice(0, 8)
    const order = makeOrder(`order_${run}`)
    const subscriptionId = `orders-projection-${run}`
    const a = yield* startReplica("replica-A", subscriptionId, order)
    const b = yield* startReplica("replica-B", subscriptionId, order)

    const first = yield* awaitHolder(subscriptionId, () => true)
    const [leader, follower] = first.workerId === a.workerId ? [a, b] : [b, a]
    yield* Console.log("--- after startup ---")
    yield* Console.log(`lease holder: ${leader.workerId} (fence_token=${first.fenceToken})`)

    yield* Console.log("--- appending 5 events; leader processes ---")
    yield* placeOrders(order, 0, 5)
    yield* leader.runner.whenCaughtUp(subscriptionId)
    const beforeA = yield* a.handled
    const beforeB = yield* b.handled
    yield* Console.log(`  A processed ${beforeA} events`)
    yield* Console.log(`  B processed ${beforeB} events`)

    yield* Console.log(`--- killing the current leader (${leader.workerId}); follower should take over ---`)
    const killedAt = Date.now()
    yield* leader.kill
    const next = yield* awaitHolder(subscriptionId, (id) => id === follower.workerId)
    yield* Console.log(`lease holder after failover: ${next.workerId} (fence_token=${next.fenceToken})`)
    yield* Console.log(
      `  took over ${Date.now() - killedAt} ms after the kill (the lease was released, so within one ` +
        `recheck of ${runnerOptions.leaseRecheckInterval}; a crash would take up to leaseTtl + recheck = ` +
        `${runnerOptions.leaseTtl} + ${runnerOptions.leaseRecheckInterval})`
    )

    yield* Console.log("--- appending 5 more events; new leader processes ---")
    yield* placeOrders(order, 5, 5)
    yield* follower.runner.whenCaughtUp(subscriptionId)
    const afterA = yield* a.handled
    const afterB = yield* b.handled
    yield* Console.log(`  A processed ${afterA} events total (Δ ${afterA - beforeA})`)
    yield* Console.log(`  B processed ${afterB} events total (Δ ${afterB - beforeB})`)
    yield* follower.kill

    const firstFive = leader === a ? beforeA : beforeB
    const nextFive = follower === a ? afterA - beforeA : afterB - beforeB
    yield* Console.log("--- summary ---")
    yield* Console.log(`  total events processed: A=${afterA}, B=${afterB} (sum ${afterA + afterB})`)
    yield* Console.log(
      `  first ${firstFive} on ${leader.workerId} (fence_token=${first.fenceToken}), ` +
        `next ${nextFive} on ${follower.workerId} (fence_token=${next.fenceToken})`
    )
    yield* Console.log(
      "  10 events were appended; in this clean handoff each was delivered once, to the current leader. " +
        "Under a mid-batch pause and failover, delivery is at least once: idempotent handlers absorb the redelivery."
    )
  })
)
