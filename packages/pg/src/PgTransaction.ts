/**
 * Settings of the transactions mire opens on PostgreSQL (`EventStore.transaction`,
 * a projection batch with its checkpoint, a saga outcome).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"

/**
 * The `idle_in_transaction_session_timeout` every outermost mire transaction
 * sets with `SET LOCAL` (default 60 seconds; zero disables it). A process
 * frozen mid-transaction (a stopped process, a paused VM) holds a
 * transaction id, and so the xmin horizon every subscription on the server
 * waits behind; after this long idle the server ends its session and the
 * transaction rolls back. Keep it above the longest pause between the
 * statements of one of your own `EventStore.transaction`s.
 *
 * @example
 * ```ts
 * import { EventStore } from "@mire/core"
 * import { PgTransaction } from "@mire/pg"
 * import { Duration, Effect } from "effect"
 *
 * const program = EventStore.streamVersion("account-42")
 * // The server ends a transaction left idle for 30 seconds (instead of the default 60).
 * const runnable = program.pipe(Effect.provideService(PgTransaction.IdleInTransactionTimeout, Duration.seconds(30)))
 * ```
 * @since 0.1.0
 * @category settings
 */
export class IdleInTransactionTimeout extends Context.Reference<IdleInTransactionTimeout>()(
  "@mire/pg/IdleInTransactionTimeout",
  { defaultValue: (): Duration.Duration => Duration.seconds(60) }
) {}
