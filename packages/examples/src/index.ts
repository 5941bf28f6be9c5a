/**
 * The runnable examples of mire, by name: `npm run example -- <name>`.
 *
 * @since 0.1.0
 */
import type * as PgClient from "@effect/sql-pg/PgClient"
import type * as SqlClient from "@effect/sql/SqlClient"
import type { CommandLog, EventStore, LeaseStore, SagaStore, SubscriptionStore } from "@mire/core"
import type { Effect } from "effect"
import * as bank_account from "./bank_account.js"
import * as batched_write from "./batched_write.js"
import * as commands from "./commands.js"
import * as concurrency from "./concurrency.js"
import * as multi_replica from "./multi_replica.js"
import * as projection from "./projection.js"
import * as saga from "./saga.js"
import * as scale_out from "./scale_out.js"
import * as telemetry from "./telemetry.js"
import * as snapshot from "./snapshot.js"
import * as transaction_scope from "./transaction_scope.js"

/**
 * What every example is: a program over mire's PostgreSQL services (the
 * event store, subscriptions, leases and sagas) and the SQL client that
 * prints its story.
 *
 * @since 0.1.0
 */
export type Example = Effect.Effect<
  void,
  unknown,
  | EventStore.EventStore
  | SubscriptionStore.SubscriptionStore
  | LeaseStore.LeaseStore
  | SagaStore.SagaStore
  | CommandLog.CommandLog
  | SqlClient.SqlClient
  | PgClient.PgClient
>

/**
 * Each example's `program`, by the name `npm run example` takes.
 *
 * @since 0.1.0
 */
export const examples = {
  bank_account: bank_account.program,
  commands: commands.program,
  concurrency: concurrency.program,
  projection: projection.program,
  snapshot: snapshot.program,
  transaction_scope: transaction_scope.program,
  multi_replica: multi_replica.program,
  batched_write: batched_write.program,
  saga: saga.program,
  scale_out: scale_out.program,
  telemetry: telemetry.program
} as const satisfies Record<string, Example>

/** @since 0.1.0 */
export type ExampleName = keyof typeof examples

/**
 * Is `name` one of the {@link examples}?
 *
 * @since 0.1.0
 */
export const isExample = (name: string | undefined): name is ExampleName =>
  name !== undefined && Object.hasOwn(examples, name)
