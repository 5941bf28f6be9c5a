/**
 * Every in-memory service in one layer: the event store, subscriptions,
 * leases and sagas, over one shared in-memory state. Swap it for `PgStore.layer` to
 * test a program without a database. Each service also has its own
 * `layerMemory` (`EventStore.layerMemory`, `SubscriptionStore.layerMemory`,
 * `LeaseStore.layerMemory`, `SagaStore.layerMemory`).
 *
 * @since 0.1.0
 */
import * as Layer from "effect/Layer"
import * as CommandLog from "./CommandLog.js"
import * as DeadLetters from "./DeadLetters.js"
import * as EventStore from "./EventStore.js"
import type * as Memory from "./internal/memory/eventStore.js"
import * as LeaseStore from "./LeaseStore.js"
import * as SagaStore from "./SagaStore.js"
import * as SubscriptionStore from "./SubscriptionStore.js"
import * as WorkerStore from "./WorkerStore.js"

export {
  /**
   * The in-memory driver: the shared state under the in-memory services, for
   * tests that inspect it, write raw rows (legacy or corrupt events, gaps) or
   * run work inside an in-memory transaction. Every in-memory layer provides it.
   *
   * @example
   * ```ts
   * import { InMemory } from "@mire/core"
   * import { Effect } from "effect"
   *
   * const logLength = Effect.map(InMemory.Driver, (driver) => driver.log.length)
   * Effect.runPromise(logLength.pipe(Effect.provide(InMemory.layer))).then((n) => assert.strictEqual(n, 0))
   * ```
   * @since 0.1.0
   * @category tags
   */
  Driver
} from "./internal/memory/eventStore.js"

/**
 * Every in-memory service over one shared log and its driver: the event
 * store, subscriptions, leases and sagas. A fresh, empty store per build.
 *
 * @example
 * ```ts
 * import { EventStore, InMemory, Lease } from "@mire/core"
 * import { Effect } from "effect"
 *
 * // The event store and the subscription, lease and saga stores, sharing one in-memory log.
 * const program = Effect.zip(EventStore.streamVersion("account-42"), Lease.status("balances"))
 * const runnable = program.pipe(Effect.provide(InMemory.layer))
 * ```
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<
  | EventStore.EventStore
  | SubscriptionStore.SubscriptionStore
  | LeaseStore.LeaseStore
  | SagaStore.SagaStore
  | CommandLog.CommandLog
  | WorkerStore.WorkerStore
  | DeadLetters.DeadLetterStore
  | Memory.Driver
> = Layer.mergeAll(SubscriptionStore.layerMemory, LeaseStore.layerMemory, SagaStore.layerMemory, CommandLog.layerMemory, WorkerStore.layerMemory, DeadLetters.layerMemory).pipe(
  Layer.provideMerge(EventStore.layerMemory)
)
