/**
 * Schemas for the rows mire reads from SQL (other than event rows, which
 * `rows.ts` checks in one hand-written pass for speed), and the decoders that
 * turn a row of the wrong shape into a `StoreError` instead of a defect or a
 * silently wrong value.
 */
import type * as SqlError from "@effect/sql/SqlError"
import * as SqlSchema from "@effect/sql/SqlSchema"
import { StoreError } from "@mire/core/EventStoreError"
import * as Effect from "effect/Effect"
import * as ParseResult from "effect/ParseResult"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import { refail } from "./errors.js"

/**
 * The `StoreError` for a row that does not match its Schema: the same kind
 * as a corrupt event row (`rows.ts`'s `corruptRow`), with the Schema's
 * account of every wrong field.
 */
export const corrupt =
  (operation: string) =>
  (error: ParseResult.ParseError): StoreError =>
    new StoreError({
      kind: "Other",
      operation,
      cause: new Error(`corrupt row: ${ParseResult.TreeFormatter.formatErrorSync(error)}`)
    })

/** Decodes every row with `schema`; a row of the wrong shape is a `StoreError` of `operation`. */
export const decodeRows = <A, I>(schema: Schema.Schema<A, I>, operation: string) => {
  const decode = Schema.decodeUnknown(Schema.Array(schema))
  return (rows: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<A>, StoreError> =>
    Effect.mapError(decode(rows), corrupt(operation))
}

/**
 * Decodes the rows of a statement that always returns at least one (a
 * `LEFT JOIN` from `(SELECT 1)`); none, or a row of the wrong shape, is a
 * `StoreError`.
 */
export const decodeNonEmptyRows = <A, I>(schema: Schema.Schema<A, I>, operation: string) => {
  const decode = Schema.decodeUnknown(Schema.NonEmptyArray(schema))
  return (rows: ReadonlyArray<unknown>): Effect.Effect<readonly [A, ...Array<A>], StoreError> =>
    Effect.mapError(decode(rows), corrupt(operation))
}

/**
 * Decodes the one row a statement always returns (an aggregate, a `LEFT JOIN`
 * from `(SELECT 1)`); none, or a row of the wrong shape, is a `StoreError`.
 */
export const decodeSingle = <A, I>(schema: Schema.Schema<A, I>, operation: string) => {
  const decode = Schema.decodeUnknown(Schema.Tuple([schema], Schema.Unknown))
  return (rows: ReadonlyArray<unknown>): Effect.Effect<A, StoreError> =>
    Effect.mapError(
      Effect.map(decode(rows), ([row]) => row),
      corrupt(operation)
    )
}

/**
 * `SqlSchema.findOne` for a statement of mire's: the first row decoded with
 * `Result` (none: `Option.none()`); a driver error or a row of the wrong
 * shape is a `StoreError` of `operation`.
 */
export const findOne = <IA, II, A, AI>(
  operation: string,
  options: {
    readonly Request: Schema.Schema<IA, II>
    readonly Result: Schema.Schema<A, AI>
    readonly execute: (request: II) => Effect.Effect<ReadonlyArray<unknown>, SqlError.SqlError>
  }
) => {
  const find = SqlSchema.findOne(options)
  return (request: IA) =>
    find(request).pipe(
      Effect.catchTag("ParseError", (error) => Effect.fail(corrupt(operation)(error))),
      refail(operation)
    )
}

/**
 * A non-negative `bigint` sent as text (a position, a transaction id, a fence
 * token: an `int8` or `xid8` cast with `::text`, since JavaScript numbers
 * cannot hold every one).
 */
export const NonNegativeBigIntText = Schema.NonNegativeBigInt

/** A `timestamptz` as the driver parses it: a `Date` that is a time (`infinity` comes as a number, and fails). */
export const Timestamp = Schema.ValidDateFromSelf

/**
 * A `jsonb` object as the driver parses it, kept as parsed (never copied,
 * so a stored `__proto__` key stays an own property).
 */
const JsonObject = Schema.declare((u): u is { readonly [key: string]: unknown } => Predicate.isRecord(u), {
  identifier: "JsonObject"
})

/**
 * A checkpoint's `delivered` column (stream → version delivered past the
 * cursor) as a `Map`; a value that is not a version is a parse error, not
 * an entry silently dropped.
 */
export const Delivered = Schema.transform(JsonObject, Schema.Array(Schema.Tuple(Schema.String, Schema.Unknown)), {
  strict: true,
  decode: (object) => Object.entries(object),
  encode: (entries) => Object.fromEntries(entries)
}).pipe(
  // The middle step's values are `unknown` on one side and versions on the other: the map checks them.
  Schema.compose(Schema.ReadonlyMap({ key: Schema.String, value: Schema.NonNegativeInt }), { strict: false })
)
