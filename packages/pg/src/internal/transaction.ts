import type * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlError from "@effect/sql/SqlError"
import type { StoreError } from "@mire/core/EventStoreError"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import { refail } from "./errors.js"

class UserFailure<E> extends Data.TaggedClass("UserFailure")<{ readonly error: E }> {}
class UserDefect extends Data.TaggedClass("UserDefect")<{ readonly defect: unknown }> {}

/**
 * `sql.withTransaction`, with the effect's own errors kept as they are and
 * the transaction's (BEGIN, and COMMIT failures that `@effect/sql` raises as
 * defects) mapped to `StoreError`.
 */
export const transaction =
  (sql: SqlClient.SqlClient) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | StoreError, R> =>
    sql
      .withTransaction(
        effect.pipe(
          Effect.mapError((error) => new UserFailure({ error })),
          // The effect's own defects stay defects: only BEGIN/COMMIT failures become StoreErrors.
          Effect.catchAllDefect((defect) => Effect.die(new UserDefect({ defect })))
        )
      )
      .pipe(
        Effect.catchAll(
          (e): Effect.Effect<never, E | SqlError.SqlError> =>
            e instanceof UserFailure ? Effect.fail(e.error as E) : Effect.fail(e as SqlError.SqlError)
        ),
        refail("transaction"),
        Effect.catchAllDefect((defect) => Effect.die(defect instanceof UserDefect ? defect.defect : defect))
      ) as Effect.Effect<A, E | StoreError, R>
