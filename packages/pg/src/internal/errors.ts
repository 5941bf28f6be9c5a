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

const messageOf = (error: unknown): string => {
  const cause = Predicate.hasProperty(error, "cause") ? error.cause : error
  return Predicate.hasProperty(cause, "message") && typeof cause.message === "string" ? cause.message : ""
}

/**
 * A missing relation (`42P01`) or function (`42883`) of mire's own, or a
 * missing schema (`3F000`, only mire's statements name one): the schema is
 * not migrated.
 */
const isNotMigrated = (code: string, error: unknown): boolean =>
  code === "3F000" ||
  (code === "42P01" && /relation "(?:[a-z0-9_]+\.)?es_[a-z_]+" does not exist/.test(messageOf(error))) ||
  (code === "42883" && /function (?:[a-z0-9_]+\.)?mire_[a-z_]+\(/.test(messageOf(error)))

/** Coarse classification of a SQLSTATE (or a socket error code). */
export const kindOf = (error: unknown): StoreErrorKind => {
  const code = sqlState(error)
  if (code === undefined) return "Connection"
  // Unknown database, failed authentication, no such role.
  if (code === "3D000" || code.startsWith("28")) return "Connection"
  if (isNotMigrated(code, error)) return "NotMigrated"
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

/**
 * The driver's own error: a `SqlError`'s cause, and the first attempt of an
 * `AggregateError` (a host name resolving to several addresses), whose own
 * message is empty.
 */
const driverCause = (error: unknown): unknown => {
  const cause = Predicate.hasProperty(error, "cause") && error.cause !== undefined ? error.cause : error
  return cause instanceof AggregateError && cause.message === "" && cause.errors.length > 0 ? cause.errors[0] : cause
}

/** Wraps a driver error as a `StoreError` of `operation`. */
export const toStoreError = (operation: string) => (error: SqlError.SqlError | unknown): StoreError =>
  new StoreError({ kind: kindOf(error), operation, cause: driverCause(error) })

const isSqlError = (u: unknown): u is SqlError.SqlError => Predicate.isTagged(u, "SqlError")

/** Maps `SqlError` failures, and `SqlError` defects (COMMIT failures), to `StoreError`. */
export const refail =
  (operation: string) =>
  <A, E, R>(effect: Effect.Effect<A, E | SqlError.SqlError, R>): Effect.Effect<A, Exclude<E, SqlError.SqlError> | StoreError, R> =>
    effect.pipe(
      Effect.catchIf(isSqlError, (e) => Effect.fail(toStoreError(operation)(e))),
      Effect.catchSomeDefect((defect) =>
        isSqlError(defect) ? Option.some(Effect.fail(toStoreError(operation)(defect))) : Option.none()
      )
    )
