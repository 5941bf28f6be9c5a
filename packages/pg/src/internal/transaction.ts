import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlError from "@effect/sql/SqlError"
import type { StoreError } from "@mire/core/EventStoreError"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { IdleInTransactionTimeout } from "../PgTransaction.js"
import { refail } from "./errors.js"

class UserFailure<E> extends Data.TaggedClass("UserFailure")<{ readonly error: E }> {}
class UserDefect extends Data.TaggedClass("UserDefect")<{ readonly defect: unknown }> {}

/**
 * Bounds how long this transaction may sit idle (`SET LOCAL`, as a bound
 * parameter of `set_config`): a frozen process cannot hold its xid, and with
 * it every subscription's horizon, for longer.
 */
const boundIdle = (sql: SqlClient.SqlClient): Effect.Effect<void, SqlError.SqlError> =>
  Effect.flatMap(IdleInTransactionTimeout, (timeout) =>
    Effect.asVoid(
      sql`SELECT set_config('idle_in_transaction_session_timeout', ${String(Math.max(0, Math.round(Duration.toMillis(timeout))))}, true)`
    )
  )

/**
 * `sql.withTransaction`, with the effect's own errors kept as they are and
 * the transaction's (BEGIN, and COMMIT failures that `@effect/sql` raises as
 * defects) mapped to `StoreError`. An outermost transaction first bounds its
 * idle time ({@link IdleInTransactionTimeout}).
 */
export const transaction =
  (sql: SqlClient.SqlClient) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | StoreError, R> =>
    Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (ambient) => {
      const guarded = effect.pipe(
        Effect.mapError((error) => new UserFailure({ error })),
        // The effect's own defects stay defects: only BEGIN/COMMIT failures become StoreErrors.
        Effect.catchAllDefect((defect) => Effect.die(new UserDefect({ defect })))
      )
      return sql
        .withTransaction(Option.isSome(ambient) ? guarded : Effect.zipRight(boundIdle(sql), guarded))
        .pipe(
          Effect.catchAll(
            (e): Effect.Effect<never, E | SqlError.SqlError> =>
              e instanceof UserFailure ? Effect.fail(e.error as E) : Effect.fail(e as SqlError.SqlError)
          ),
          refail("transaction"),
          Effect.catchAllDefect((defect) => Effect.die(defect instanceof UserDefect ? defect.defect : defect))
        ) as Effect.Effect<A, E | StoreError, R>
    })
