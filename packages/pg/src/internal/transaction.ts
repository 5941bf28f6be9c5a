import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlError from "@effect/sql/SqlError"
import type { StoreError } from "@mire/core/EventStoreError"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
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
 * Inside an outermost {@link transaction}: registers effects to run once it
 * has committed (never when it rolls back). An effect registered inside a
 * savepoint that later rolls back still runs if the outer transaction
 * commits: register only what is harmless then (a wake-up).
 */
export class AfterCommit extends Context.Tag("@mire/pg/internal/AfterCommit")<
  AfterCommit,
  { readonly register: (effect: Effect.Effect<void>) => Effect.Effect<void> }
>() {}

/**
 * `sql.withTransaction`, with the effect's own errors kept as they are and
 * the transaction's (BEGIN, and COMMIT failures that `@effect/sql` raises as
 * defects) mapped to `StoreError`. An outermost transaction first bounds its
 * idle time ({@link IdleInTransactionTimeout}) and runs the {@link AfterCommit}
 * hooks registered inside it once it has committed.
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
      const run = Option.isSome(ambient)
        ? sql.withTransaction(guarded)
        : Effect.flatMap(Ref.make<ReadonlyArray<Effect.Effect<void>>>([]), (hooks) =>
            sql
              .withTransaction(
                Effect.zipRight(
                  boundIdle(sql),
                  Effect.provideService(guarded, AfterCommit, {
                    register: (hook) => Ref.update(hooks, (all) => [...all, hook])
                  })
                )
              )
              .pipe(Effect.tap(() => Effect.flatMap(Ref.get(hooks), (all) => Effect.all(all, { discard: true }))))
          )
      return run.pipe(
        Effect.catchTag("UserFailure", (failure) => Effect.fail(failure.error)),
        refail("transaction"),
        Effect.catchAllDefect((defect) => Effect.die(defect instanceof UserDefect ? defect.defect : defect))
      )
    })
