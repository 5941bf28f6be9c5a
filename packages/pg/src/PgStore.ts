/**
 * Every PostgreSQL service in one layer: the event store, subscriptions,
 * leases and sagas, over one `PgClient`.
 *
 * @since 0.1.0
 */
import type * as PgClient from "@effect/sql-pg/PgClient"
import type * as SqlClient from "@effect/sql/SqlClient"
import type * as EventStore from "@mire/core/EventStore"
import type * as Lease from "@mire/core/Lease"
import type * as SagaStore from "@mire/core/SagaStore"
import type * as Subscription from "@mire/core/Subscription"
import * as Layer from "effect/Layer"
import * as PgEventStore from "./PgEventStore.js"
import * as PgLeaseStore from "./PgLeaseStore.js"
import * as PgSagaStore from "./PgSagaStore.js"
import * as PgSubscriptionStore from "./PgSubscriptionStore.js"

/**
 * @example
 * program.pipe(Effect.provide(PgStore.layer), Effect.provide(PgClient.layer({ url })))
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<
  EventStore.EventStore | Subscription.SubscriptionStoreTag | Lease.LeaseStoreTag | SagaStore.SagaStoreTag,
  never,
  PgClient.PgClient | SqlClient.SqlClient
> = Layer.mergeAll(PgEventStore.layer, PgSubscriptionStore.layer, PgLeaseStore.layer, PgSagaStore.layer)
