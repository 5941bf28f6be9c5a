/**
 * Every PostgreSQL service in one layer: the event store, subscriptions,
 * leases and sagas, over one `PgClient`. Subscriptions and sagas share the
 * layer's one wake-up listener (`PgWakeups.layer`: one extra connection,
 * `application_name` `mire-listener`, closed with the layer).
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import type * as SqlClient from "@effect/sql/SqlClient"
import * as SqlError from "@effect/sql/SqlError"
import type * as CommandLog from "@mire/core/CommandLog"
import type * as DeadLetters from "@mire/core/DeadLetters"
import type * as EventStore from "@mire/core/EventStore"
import type { InvalidInput, StoreError } from "@mire/core/EventStoreError"
import type * as SagaStore from "@mire/core/SagaStore"
import type * as LeaseStore from "@mire/core/LeaseStore"
import type * as SubscriptionStore from "@mire/core/SubscriptionStore"
import type * as WorkerStore from "@mire/core/WorkerStore"
import type * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Layer from "effect/Layer"
import { toStoreError } from "./internal/errors.js"
import * as PgCommandLog from "./PgCommandLog.js"
import * as PgDeadLetterStore from "./PgDeadLetterStore.js"
import * as PgEventStore from "./PgEventStore.js"
import * as PgLeaseStore from "./PgLeaseStore.js"
import * as PgSagaStore from "./PgSagaStore.js"
import * as PgSchema from "./PgSchema.js"
import * as PgSubscriptionStore from "./PgSubscriptionStore.js"
import * as PgWorkerStore from "./PgWorkerStore.js"

/**
 * @example
 * ```ts
 * import { PgClient } from "@effect/sql-pg"
 * import { EventStore } from "@mire/core"
 * import { PgStore } from "@mire/pg"
 * import { Effect, Redacted } from "effect"
 *
 * const program = EventStore.streamVersion("account-42")
 * const runnable = program.pipe(
 *   Effect.provide(PgStore.layer),
 *   Effect.provide(PgClient.layer({ url: Redacted.make("postgres://localhost/app") }))
 * )
 * ```
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<
  EventStore.EventStore | SubscriptionStore.SubscriptionStore | LeaseStore.LeaseStore | SagaStore.SagaStore | WorkerStore.WorkerStore
  | CommandLog.CommandLog
  | DeadLetters.DeadLetterStore,
  never,
  PgClient.PgClient | SqlClient.SqlClient
> = Layer.mergeAll(PgEventStore.layer, PgSubscriptionStore.layer, PgLeaseStore.layer, PgSagaStore.layer, PgWorkerStore.layer, PgCommandLog.layer, PgDeadLetterStore.layer)

/**
 * {@link layer} in `schema` instead of the ambient `PgSchema` (an
 * application or tenant of its own in a shared database): every service
 * {@link layer} provides, each on that schema's tables. Built fresh: it
 * shares no listener or notifier with a store layer of another schema in
 * the same program. A name mire does not accept fails the layer with
 * `InvalidInput` before anything touches the database.
 *
 * @example
 * ```ts
 * import { EventStore } from "@mire/core"
 * import { PgMigrations, PgSchema, PgStore } from "@mire/pg"
 * import { Effect, Redacted } from "effect"
 *
 * const client = PgStore.client({ url: Redacted.make("postgres://localhost/app") })
 * const tenantA = Effect.gen(function* () {
 *   yield* PgMigrations.migrate().pipe(Effect.provide(PgSchema.layer("tenant_a")))
 *   return yield* EventStore.streamVersion("account-42").pipe(Effect.provide(PgStore.layerSchema("tenant_a")))
 * }).pipe(Effect.provide(client))
 * ```
 * @since 0.2.0
 * @category layers
 */
export const layerSchema = (
  schema: string
): Layer.Layer<Layer.Layer.Success<typeof layer>, InvalidInput, PgClient.PgClient | SqlClient.SqlClient> =>
  Layer.fresh(layer).pipe(Layer.provide(PgSchema.layer(schema)))

/**
 * A `PgClient` (it connects while the layer builds) whose failure to connect
 * is a `StoreError` of kind `Connection` with the server's own reason first
 * (`database "x" does not exist`, `password authentication failed…`,
 * `connect ECONNREFUSED…`), instead of a raw `SqlError`.
 *
 * @example
 * ```ts
 * import { EventStore } from "@mire/core"
 * import { PgStore } from "@mire/pg"
 * import { Effect, Redacted } from "effect"
 *
 * const program = EventStore.streamVersion("account-42")
 * // A connection failure is a StoreError, like every other store failure.
 * const runnable = program.pipe(
 *   Effect.provide(PgStore.layer),
 *   Effect.provide(PgStore.client({ url: Redacted.make("postgres://localhost/app") }))
 * )
 * ```
 * @since 0.1.0
 * @category layers
 */
export const client = (
  options: PgClient.PgClientConfig
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, StoreError> =>
  PgClient.layer(options).pipe(Layer.mapError(toStoreError("connect")))

/**
 * {@link client} from `Config` (e.g. `url: Config.redacted("DATABASE_URL")`).
 *
 * @since 0.1.0
 * @category layers
 */
export const clientConfig = (
  config: Config.Config.Wrap<PgClient.PgClientConfig>
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, StoreError | ConfigError.ConfigError> =>
  PgClient.layerConfig(config).pipe(
    Layer.mapError((error) => (error instanceof SqlError.SqlError ? toStoreError("connect")(error) : error))
  )

/**
 * Every PostgreSQL service and its client in one layer; a failure to
 * connect is a `StoreError` of kind `Connection`.
 *
 * @example
 * ```ts
 * import { EventStore } from "@mire/core"
 * import { PgStore } from "@mire/pg"
 * import { Effect, Redacted } from "effect"
 *
 * const program = EventStore.streamVersion("account-42")
 * const runnable = program.pipe(Effect.provide(PgStore.layerClient({ url: Redacted.make("postgres://localhost/app") })))
 * ```
 * @since 0.1.0
 * @category layers
 */
export const layerClient = (
  options: PgClient.PgClientConfig
): Layer.Layer<
  | EventStore.EventStore
  | SubscriptionStore.SubscriptionStore
  | LeaseStore.LeaseStore
  | SagaStore.SagaStore
  | WorkerStore.WorkerStore
  | CommandLog.CommandLog
  | PgClient.PgClient
  | SqlClient.SqlClient,
  StoreError
> => layer.pipe(Layer.provideMerge(client(options)))

/**
 * {@link layerClient} from `Config`.
 *
 * @example
 * ```ts
 * import { EventStore } from "@mire/core"
 * import { PgStore } from "@mire/pg"
 * import { Config, Effect } from "effect"
 *
 * const program = EventStore.streamVersion("account-42")
 * const runnable = program.pipe(Effect.provide(PgStore.layerClientConfig({ url: Config.redacted("DATABASE_URL") })))
 * ```
 * @since 0.1.0
 * @category layers
 */
export const layerClientConfig = (
  config: Config.Config.Wrap<PgClient.PgClientConfig>
): Layer.Layer<
  | EventStore.EventStore
  | SubscriptionStore.SubscriptionStore
  | LeaseStore.LeaseStore
  | SagaStore.SagaStore
  | WorkerStore.WorkerStore
  | CommandLog.CommandLog
  | PgClient.PgClient
  | SqlClient.SqlClient,
  StoreError | ConfigError.ConfigError
> => layer.pipe(Layer.provideMerge(clientConfig(config)))
