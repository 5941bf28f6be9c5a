/**
 * Events as the store sees them: what goes in ({@link NewEvent}), what comes
 * back ({@link RecordedEvent}) and what an append returns
 * ({@link CommittedEvents}).
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import * as Json from "./internal/json.js"
import * as StreamId from "./StreamId.js"

/**
 * A JSON object, the stored shape of event data and custom metadata. Its
 * decoding never copies: every key of a stored object (also `__proto__`,
 * `constructor`, `prototype`) stays an own property and no prototype is ever
 * set. Use it (not `Schema.Record`) for free-form JSON inside event and
 * snapshot Schemas.
 *
 * @since 0.1.0
 * @category models
 */
export const JsonObject: Schema.Schema<{ readonly [key: string]: unknown }> = Json.JsonObject

/**
 * @since 0.1.0
 * @category models
 */
export type JsonObject = typeof JsonObject.Type

/**
 * Is a value a JSON object as {@link JsonObject} decodes it (a plain object:
 * prototype `Object.prototype` or `null`, not an array)? The check a store's
 * row decoder applies to stored `data` and `metadata`, without copying.
 *
 * @since 0.1.0
 * @category guards
 */
export const isJsonObject: (u: unknown) => u is JsonObject = Json.isPlainObject

/**
 * Metadata stored with every event. `eventId` is always set (a UUID); the
 * rest is optional. `custom` holds the caller's own JSON.
 *
 * @since 0.1.0
 * @category models
 */
export const EventMetadata = Schema.Struct({
  correlationId: Schema.optional(Schema.String),
  causationId: Schema.optional(Schema.String),
  custom: Schema.optional(JsonObject)
})

/**
 * @since 0.1.0
 * @category models
 */
export type EventMetadata = typeof EventMetadata.Type

/**
 * An event to append, already encoded: its stored type, schema version and
 * JSON data. Build one from a typed event with `EventCodec.encode`.
 *
 * @example
 * ```ts
 * import type { RecordedEvent } from "@mire/core"
 *
 * const opened: RecordedEvent.NewEvent = { eventType: "account.opened", schemaVersion: 1, data: { owner: "Ada" } }
 * ```
 * @since 0.1.0
 * @category models
 */
export interface NewEvent {
  readonly eventType: string
  readonly schemaVersion: number
  readonly data: JsonObject
  readonly eventId?: string | undefined
  readonly metadata?: EventMetadata | undefined
}

/**
 * The aggregate id of a stream: its id without the `<category>-` prefix
 * (`account-42` of category `account` is `42`). A stream id that does not
 * start with its category's prefix (a raw `append` may name any stream) is
 * its own aggregate id.
 *
 * @example
 * ```ts
 * import { RecordedEvent } from "@mire/core"
 *
 * assert.strictEqual(RecordedEvent.aggregateIdOf("account-42", "account"), "42")
 * assert.strictEqual(RecordedEvent.aggregateIdOf("order-a-b", "order"), "a-b")
 * assert.strictEqual(RecordedEvent.aggregateIdOf("ledger", "account"), "ledger")
 * ```
 * @since 0.2.0
 * @category constructors
 */
export const aggregateIdOf = (streamId: string, category: string): string =>
  streamId.length > category.length + 1 && streamId.charCodeAt(category.length) === 45 && streamId.startsWith(category)
    ? streamId.slice(category.length + 1)
    : streamId

/**
 * An event as stored in the log. `globalPosition` is unique and increasing
 * in insertion order (it may have gaps); `transactionId` is the writing
 * transaction's id, which with `globalPosition` forms the commit-safe cursor
 * subscriptions follow. `streamId` and `category` carry their brands: they
 * were validated when the event was appended. `aggregateId` is the stream id
 * without its category (see {@link aggregateIdOf}), computed once when the
 * event is read.
 *
 * @since 0.1.0
 * @category models
 */
export const RecordedEvent = Schema.Struct({
  eventId: Schema.String,
  streamId: StreamId.StreamId,
  category: StreamId.Category,
  /** The stream id without its `<category>-` prefix (since 0.2.0). */
  aggregateId: Schema.String,
  streamVersion: Schema.Number,
  globalPosition: Schema.BigIntFromSelf,
  transactionId: Schema.BigIntFromSelf,
  eventType: Schema.String,
  schemaVersion: Schema.Number,
  data: JsonObject,
  metadata: EventMetadata,
  recordedAt: Schema.DateFromSelf
})

/**
 * @since 0.1.0
 * @category models
 */
export interface RecordedEvent extends Schema.Schema.Type<typeof RecordedEvent> {}

/**
 * What one stream's append wrote: the version range, the global positions
 * of its events and the transaction id.
 *
 * @since 0.1.0
 * @category models
 */
export interface CommittedEvents {
  readonly streamId: StreamId.StreamId
  readonly firstVersion: number
  readonly lastVersion: number
  readonly firstPosition: bigint
  readonly lastPosition: bigint
  readonly transactionId: bigint
}
