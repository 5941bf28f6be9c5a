/**
 * Validation of stream ids, categories and aggregate ids.
 *
 * Ids are ASCII tokens: letters, digits and `_ . : @ + = ~ /` and `-`, at
 * most 255 characters. They travel into SQL only as bound parameters, but a
 * narrow alphabet also keeps them safe in URLs, logs and NOTIFY payloads;
 * encode or hash other ids (unicode, spaces, quotes) before using them.
 * A category is an identifier (`[A-Za-z][A-Za-z0-9_]*`, at most 63
 * characters): no `-`, because a stream id is `<category>-<id>`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import { InvalidInput } from "./EventStoreError.js"

const idPattern = /^[A-Za-z0-9_.:@+=~/-]+$/
const categoryPattern = /^[A-Za-z][A-Za-z0-9_]*$/

/**
 * The longest stream id accepted.
 *
 * @since 0.1.0
 */
export const maxLength = 255

const describe = (value: string): string =>
  value.length > 40 ? `${JSON.stringify(value.slice(0, 40))}… (${value.length} chars)` : JSON.stringify(value)

/**
 * Validates a stream id.
 *
 * @since 0.1.0
 */
export const validate = (streamId: string, field = "streamId"): Effect.Effect<string, InvalidInput> => {
  const fault = invalid(streamId, field)
  return fault === undefined ? Effect.succeed(streamId) : Effect.fail(fault)
}

/**
 * The reason a stream id is refused, or `undefined` when it is valid (the
 * check of {@link validate}, for code that validates many values in a loop).
 *
 * @since 0.1.0
 */
export const invalid = (streamId: string, field = "streamId"): InvalidInput | undefined =>
  typeof streamId === "string" && streamId.length > 0 && streamId.length <= maxLength && idPattern.test(streamId)
    ? undefined
    : new InvalidInput({
        field,
        reason: `${describe(String(streamId))} must be 1-${maxLength} characters of [A-Za-z0-9_.:@+=~/-]`
      })

/**
 * Validates a category.
 *
 * @since 0.1.0
 */
export const validateCategory = (category: string): Effect.Effect<string, InvalidInput> => {
  const fault = invalidCategory(category)
  return fault === undefined ? Effect.succeed(category) : Effect.fail(fault)
}

/**
 * The reason a category is refused, or `undefined` when it is valid.
 *
 * @since 0.1.0
 */
export const invalidCategory = (category: string): InvalidInput | undefined =>
  typeof category === "string" && category.length <= 63 && categoryPattern.test(category)
    ? undefined
    : new InvalidInput({
        field: "category",
        reason: `${describe(String(category))} must match [A-Za-z][A-Za-z0-9_]* (at most 63 characters)`
      })

/**
 * The stream id of an aggregate instance: `<category>-<id>`.
 *
 * @example
 * ```ts
 * import { StreamId } from "@mire/core"
 *
 * assert.strictEqual(StreamId.make("account", "42"), "account-42")
 * ```
 * @since 0.1.0
 */
export const make = (category: string, id: string): string => `${category}-${id}`

/**
 * Validates a category and an aggregate id and returns the stream id.
 *
 * @since 0.1.0
 */
export const forAggregate = (category: string, id: string): Effect.Effect<string, InvalidInput> =>
  validateCategory(category).pipe(
    Effect.zipRight(validate(id, "id")),
    Effect.zipRight(validate(make(category, id)))
  )
