/**
 * Stream ids, categories and aggregate ids: their branded types, Schemas and
 * validation.
 *
 * Ids are ASCII tokens: letters, digits and `_ . : @ + = ~ /` and `-`, at
 * most 255 characters. They travel into SQL only as bound parameters, but a
 * narrow alphabet also keeps them safe in URLs, logs and NOTIFY payloads;
 * encode or hash other ids (unicode, spaces, quotes) before using them.
 * A category is an identifier (`[A-Za-z][A-Za-z0-9_]*`, at most 63
 * characters): no `-`, because a stream id is `<category>-<id>`.
 *
 * The store's inputs take plain strings and validate them (a bad one is
 * `InvalidInput`); its outputs (`RecordedEvent`, `CommittedEvents`) carry the
 * brands, so code that holds a {@link StreamId} knows it was checked.
 *
 * @since 0.1.0
 */
import * as Brand from "effect/Brand"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { InvalidInput } from "./EventStoreError.js"

const idPattern = /^[A-Za-z0-9_.:@+=~/-]+$/
const categoryPattern = /^[A-Za-z][A-Za-z0-9_]*$/

/**
 * The longest stream id accepted.
 *
 * @since 0.1.0
 * @category constants
 */
export const maxLength = 255

/**
 * The longest category accepted (PostgreSQL's identifier length).
 *
 * @since 0.1.0
 * @category constants
 */
export const maxCategoryLength = 63

/**
 * A validated stream id (see the module's description of the alphabet).
 *
 * @example
 * ```ts
 * import { StreamId } from "@mire/core"
 * import { Schema } from "effect"
 *
 * const id: StreamId.StreamId = Schema.decodeSync(StreamId.StreamId)("account-42")
 * assert.strictEqual(id, "account-42")
 * assert.strictEqual(Schema.is(StreamId.StreamId)("no spaces"), false)
 * ```
 * @since 0.1.0
 * @category schemas
 */
export const StreamId = Schema.String.pipe(
  Schema.minLength(1),
  Schema.maxLength(maxLength),
  Schema.pattern(idPattern),
  Schema.brand("StreamId"),
  Schema.annotations({ identifier: "StreamId" })
)

/**
 * @since 0.1.0
 * @category models
 */
export type StreamId = typeof StreamId.Type

/**
 * A validated category: an identifier, at most {@link maxCategoryLength} characters.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Category = Schema.String.pipe(
  Schema.maxLength(maxCategoryLength),
  Schema.pattern(categoryPattern),
  Schema.brand("Category"),
  Schema.annotations({ identifier: "Category" })
)

/**
 * @since 0.1.0
 * @category models
 */
export type Category = typeof Category.Type

/**
 * Is a value a valid stream id? The check of the {@link StreamId} Schema as
 * one synchronous test (appends and loads run it on every call).
 *
 * @since 0.1.0
 * @category guards
 */
export const is = (u: unknown): u is StreamId =>
  typeof u === "string" && u.length > 0 && u.length <= maxLength && idPattern.test(u)

/**
 * Is a value a valid category? The check of the {@link Category} Schema.
 *
 * @since 0.1.0
 * @category guards
 */
export const isCategory = (u: unknown): u is Category =>
  typeof u === "string" && u.length <= maxCategoryLength && categoryPattern.test(u)

const describe = (value: string): string =>
  value.length > 40 ? `${JSON.stringify(value.slice(0, 40))}… (${value.length} chars)` : JSON.stringify(value)

const invalidStreamId = (value: unknown, field: string): InvalidInput =>
  new InvalidInput({
    field,
    reason: `${describe(String(value))} must be 1-${maxLength} characters of [A-Za-z0-9_.:@+=~/-]`
  })

const invalidCategoryOf = (value: unknown): InvalidInput =>
  new InvalidInput({
    field: "category",
    reason: `${describe(String(value))} must match [A-Za-z][A-Za-z0-9_]* (at most ${maxCategoryLength} characters)`
  })

/**
 * Checks a stream id without an `Effect` (for code that checks many values
 * in a loop): the branded id, or why it is refused.
 *
 * @since 0.1.0
 * @category validation
 */
export const parse = (streamId: string, field = "streamId"): StreamId | InvalidInput =>
  is(streamId) ? streamId : invalidStreamId(streamId, field)

/**
 * Checks a category without an `Effect`: the branded category, or why it is refused.
 *
 * @since 0.1.0
 * @category validation
 */
export const parseCategory = (category: string): Category | InvalidInput =>
  isCategory(category) ? category : invalidCategoryOf(category)

/**
 * Validates a stream id.
 *
 * @since 0.1.0
 * @category validation
 */
export const validate = (streamId: string, field = "streamId"): Effect.Effect<StreamId, InvalidInput> =>
  is(streamId) ? Effect.succeed(streamId) : Effect.fail(invalidStreamId(streamId, field))

/**
 * The reason a stream id is refused, or `undefined` when it is valid.
 *
 * @since 0.1.0
 * @category validation
 */
export const invalid = (streamId: string, field = "streamId"): InvalidInput | undefined =>
  is(streamId) ? undefined : invalidStreamId(streamId, field)

/**
 * Validates a category.
 *
 * @since 0.1.0
 * @category validation
 */
export const validateCategory = (category: string): Effect.Effect<Category, InvalidInput> =>
  isCategory(category) ? Effect.succeed(category) : Effect.fail(invalidCategoryOf(category))

/**
 * The reason a category is refused, or `undefined` when it is valid.
 *
 * @since 0.1.0
 * @category validation
 */
export const invalidCategory = (category: string): InvalidInput | undefined =>
  isCategory(category) ? undefined : invalidCategoryOf(category)

/**
 * The stream id of an aggregate instance: `<category>-<id>`, unchecked
 * (see {@link forAggregate} for the checked one).
 *
 * @example
 * ```ts
 * import { StreamId } from "@mire/core"
 *
 * assert.strictEqual(StreamId.make("account", "42"), "account-42")
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const make = (category: string, id: string): string => `${category}-${id}`

/**
 * Checks a category and an aggregate id without an `Effect` (every load
 * does): the stream id, or the first reason it cannot be one.
 *
 * @since 0.1.0
 * @category validation
 */
export const parseAggregate = (category: string, id: string): StreamId | InvalidInput => {
  const fault = invalidCategory(category) ?? invalid(id, "id")
  return fault ?? parse(make(category, id))
}

/**
 * Validates a category and an aggregate id and returns the stream id.
 *
 * @example
 * ```ts
 * import { StreamId } from "@mire/core"
 * import { Effect } from "effect"
 *
 * assert.strictEqual(Effect.runSync(StreamId.forAggregate("account", "42")), "account-42")
 * ```
 * @since 0.1.0
 * @category validation
 */
export const forAggregate = (category: string, id: string): Effect.Effect<StreamId, InvalidInput> => {
  const streamId = parseAggregate(category, id)
  return streamId instanceof InvalidInput ? Effect.fail(streamId) : Effect.succeed(streamId)
}

/**
 * Brands a stream id read back from a store without checking it again: a
 * store holds only ids that were validated when they were written, and
 * re-checking every row would cost each read a pattern test per event.
 * Use it only for ids a store holds (or that stand for them, like a test's
 * given history); validate any other id with {@link validate} or {@link parse}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromStored: (streamId: string) => StreamId = Brand.nominal<StreamId>()

/**
 * Brands a category read back from a store without checking it again (see {@link fromStored}).
 *
 * @since 0.1.0
 * @category constructors
 */
export const categoryFromStored: (category: string) => Category = Brand.nominal<Category>()
