/**
 * The storage service of live workers: a row per `ProjectionRunner`, with a
 * heartbeat on the store's clock, so every runner sees which workers are
 * alive and spreads the projections' units (subscriptions, or the shards of
 * a partitioned projection) across them (see `Rebalance`).
 *
 * One {@link WorkerStore.observe} per recheck interval is all a runner asks
 * of it: the heartbeat, the live workers and the lease state of every unit,
 * in one statement on Postgres, which takes no lock on a subscription row.
 *
 * @since 0.2.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { StoreError } from "./EventStoreError.js"
import * as Memory from "./internal/memory/eventStore.js"
import * as MemoryWorkerStore from "./internal/memory/workerStore.js"
import type { LeaseStatus } from "./Lease.js"

/**
 * A worker as stored: when it registered and when it last beat, on the
 * store's clock.
 *
 * @since 0.2.0
 * @category models
 */
export interface Worker {
  readonly workerId: string
  readonly startedAt: Date
  readonly heartbeatAt: Date
}

/**
 * What a worker sees in one look: the store's time, its live peers (the
 * workers that run the same units, `Rebalance.unitsKey`, with a heartbeat
 * within the ttl; the observer always among them) and the lease of each
 * unit asked about that has a row (a unit never leased has none).
 *
 * @since 0.2.0
 * @category models
 */
export interface Observation {
  readonly now: Date
  readonly workers: ReadonlyArray<Worker>
  readonly leases: ReadonlyArray<LeaseStatus>
}

/**
 * The storage primitives of workers.
 *
 * @since 0.2.0
 * @category storage
 */
export interface WorkerStore {
  /**
   * Beats for `workerId` (registering it on the first beat, with the key of
   * the units it runs: `Rebalance.unitsKey(subscriptionIds)`), forgets
   * workers silent for longer than `10 × ttl`, and reads the live peers (a
   * heartbeat within `ttl` and the same units key) and the leases of
   * `subscriptionIds`, all at one instant of the store's clock.
   */
  readonly observe: (
    workerId: string,
    ttl: Duration.Duration,
    subscriptionIds: ReadonlyArray<string>
  ) => Effect.Effect<Observation, StoreError>
  /** Removes the worker's row (a clean shutdown), so the others rebalance at their next look. */
  readonly leave: (workerId: string) => Effect.Effect<void, StoreError>
  /** Every registered worker, live or not, by id. */
  readonly workers: Effect.Effect<ReadonlyArray<Worker>, StoreError>
}

/**
 * The `WorkerStore` tag.
 *
 * @since 0.2.0
 * @category tags
 */
export const WorkerStore: Context.Tag<WorkerStore, WorkerStore> = Context.GenericTag<WorkerStore>("@mire/core/WorkerStore")

/**
 * How long a silent worker's row is kept, in multiples of the ttl, before
 * any observer deletes it.
 *
 * @since 0.2.0
 * @category constants
 */
export const forgetAfter = 10

/**
 * The in-memory `WorkerStore`, over the driver of `EventStore.layerMemory`
 * (`InMemory.layer` provides both). Time comes from `Clock`, so `TestClock`
 * drives liveness.
 *
 * @example
 * ```ts
 * import { EventStore, WorkerStore } from "@mire/core"
 * import { Duration, Effect, Layer } from "effect"
 *
 * const layer = WorkerStore.layerMemory.pipe(Layer.provideMerge(EventStore.layerMemory))
 * const program = Effect.flatMap(WorkerStore.WorkerStore, (store) => store.observe("replica-a", Duration.seconds(30), ["balances"]))
 * Effect.runPromise(program.pipe(Effect.provide(layer))).then((seen) => assert.strictEqual(seen.workers.length, 1))
 * ```
 * @since 0.2.0
 * @category layers
 */
export const layerMemory: Layer.Layer<WorkerStore, never, Memory.Driver> = Layer.effect(
  WorkerStore,
  Effect.map(Memory.Driver, (driver) => MemoryWorkerStore.make(driver))
)
