import type * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlError from "@effect/sql/SqlError"
import type { StoreError } from "@mire/core/EventStoreError"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import { refail } from "./errors.js"

class UserFailure<E> extends Data.TaggedClass("UserFailure")<{ readonly error: E }> {}

/**
 * `sql.withTransaction`, with the effect's own errors kept as they are and
 * the transaction's (BEGIN, and COMMIT failures that `@effect/sql` raises as
 * defects) mapped to `StoreError`.
 */
export const transaction =
  (sql: SqlClient.SqlClient) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | StoreError, R> =>
    sql.withTransaction(Effect.mapError(effect, (error) => new UserFailure({ error }))).pipe(
      Effect.catchAll(
        (e): Effect.Effect<never, E | SqlError.SqlError> =>
          e instanceof UserFailure ? Effect.fail(e.error as E) : Effect.fail(e as SqlError.SqlError)
      ),
      refail("transaction")
    ) as Effect.Effect<A, E | StoreError, R>
