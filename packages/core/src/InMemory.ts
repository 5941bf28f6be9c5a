/**
 * Every in-memory service in one layer: the event store, subscriptions,
 * leases and sagas, over one shared in-memory state. Swap it for `PgStore.layer` to
 * test a program without a database.
 *
 * @since 0.1.0
 */
import * as Layer from "effect/Layer"
import type * as EventStore from "./EventStore.js"
import * as InMemoryEventStore from "./InMemoryEventStore.js"
import * as InMemoryLeaseStore from "./InMemoryLeaseStore.js"
import * as InMemorySagaStore from "./InMemorySagaStore.js"
import * as InMemorySubscriptionStore from "./InMemorySubscriptionStore.js"
import type * as Lease from "./Lease.js"
import type * as SagaStore from "./SagaStore.js"
import type * as Subscription from "./Subscription.js"

/**
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
  | Subscription.SubscriptionStoreTag
  | Lease.LeaseStoreTag
  | SagaStore.SagaStoreTag
  | InMemoryEventStore.InMemory
> = Layer.mergeAll(InMemorySubscriptionStore.layer, InMemoryLeaseStore.layer, InMemorySagaStore.layer).pipe(
  Layer.provideMerge(InMemoryEventStore.layer)
)
