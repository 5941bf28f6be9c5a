import type { StoreErrorKind } from "@mire/core/EventStoreError"
import { StoreError } from "@mire/core/EventStoreError"
import type * as SqlError from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"

/** The SQLSTATE of a driver error, if it has one. */
export const sqlState = (error: unknown): string | undefined => {
  const cause = Predicate.hasProperty(error, "cause") ? error.cause : error
  return Predicate.hasProperty(cause, "code") && typeof cause.code === "string" ? cause.code : undefined
}

/** Coarse classification of a SQLSTATE (or a socket error code). */
export const kindOf = (error: unknown): StoreErrorKind => {
  const code = sqlState(error)
  if (code === undefined) return "Connection"
  if (code === "40001") return "SerializationFailure"
  if (code === "40P01") return "Deadlock"
  if (code === "55P03") return "LockNotAvailable"
  if (code === "57014") return "Timeout"
  if (code.startsWith("08") || code === "57P01" || code === "57P02" || code === "57P03" || code === "53300") {
    return "Connection"
  }
  if (/^E[A-Z]+$/.test(code)) return "Connection"
  return "Other"
}

/** Wraps a driver error as a `StoreError` of `operation`. */
export const toStoreError = (operation: string) => (error: SqlError.SqlError | unknown): StoreError =>
  new StoreError({
    kind: kindOf(error),
    operation,
    cause: Predicate.hasProperty(error, "cause") && error.cause !== undefined ? error.cause : error
  })

/** Maps `SqlError` failures, and `SqlError` defects (COMMIT failures), to `StoreError`. */
export const refail =
  (operation: string) =>
  <A, E, R>(effect: Effect.Effect<A, E | SqlError.SqlError, R>): Effect.Effect<A, Exclude<E, SqlError.SqlError> | StoreError, R> =>
    effect.pipe(
      Effect.catchIf(
        (e): e is SqlError.SqlError => Predicate.isTagged(e, "SqlError"),
        (e) => Effect.fail(toStoreError(operation)(e))
      ),
      Effect.catchSomeDefect((defect) =>
        Predicate.isTagged(defect, "SqlError") ? Option.some(Effect.fail(toStoreError(operation)(defect))) : Option.none()
      )
    ) as Effect.Effect<A, Exclude<E, SqlError.SqlError> | StoreError, R>
