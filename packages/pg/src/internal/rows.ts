import { aggregateIdOf, isJsonObject, type RecordedEvent } from "@mire/core/RecordedEvent"
import { StoreError } from "@mire/core/EventStoreError"
import type { FoldableEvent } from "@mire/core/EventStore"
import * as StreamId from "@mire/core/StreamId"
import * as Effect from "effect/Effect"
import * as Predicate from "effect/Predicate"

/**
 * The columns of an event row, named as `RecordedEvent`'s fields.
 * `recordedAt` comes as epoch milliseconds (a `float8`, which the driver
 * hands over as a number): building a `Date` from it is far cheaper than
 * parsing the timestamp's text. It is computed in `float8`, not with
 * `extract` (whose `numeric` arithmetic costs the server more per row than
 * the rest of the row): truncated to the millisecond first, the epoch in
 * milliseconds is within a thousandth of a millisecond of a whole number,
 * so rounding it is exact.
 */
export const eventColumns = `event_id::text AS "eventId", stream_id AS "streamId", category,
  stream_version::float8 AS "streamVersion", global_position::text AS "globalPosition",
  transaction_id::text AS "transactionId", event_type AS "eventType", schema_version AS "schemaVersion",
  data, metadata, round(date_part('epoch', date_trunc('milliseconds', recorded_at)) * 1000) AS "recordedAt"`

const integerText = /^-?[0-9]+$/

/**
 * The integer a `::text` column holds, or `undefined` when it holds none. Up to 15 digits fit a
 * double exactly, so those are checked and parsed in one pass and converted from the number:
 * `BigInt` of a string costs ten times more, and every event row has two of them.
 */
export const bigintOf = (u: unknown): bigint | undefined => {
  if (typeof u !== "string") return undefined
  const length = u.length
  if (length === 0 || length > 15) return integerText.test(u) ? BigInt(u) : undefined
  const negative = u.charCodeAt(0) === 45
  if (negative && length === 1) return undefined
  let n = 0
  for (let i = negative ? 1 : 0; i < length; i++) {
    const digit = u.charCodeAt(i) - 48
    if (digit < 0 || digit > 9) return undefined
    n = n * 10 + digit
  }
  return BigInt(negative ? -n : n)
}

/**
 * Has stored metadata only `EventMetadata`'s fields (so it can be kept as parsed, not copied)?
 * Almost always: appends store nothing else.
 */
const onlyMetadataFields = (metadata: { readonly [key: string]: unknown }): boolean => {
  for (const key in metadata) {
    if (key !== "correlationId" && key !== "causationId" && key !== "custom") return false
  }
  return true
}

/**
 * What a read of one stream knows of its rows (migration 0023's
 * `mire_read_stream_rows`): the stream id, which the read asked for and its
 * rows do not carry, and the stream's category (the stream row's), which an
 * event row carries only where it differs (NULL otherwise). Such a row's
 * `metadata` is NULL where it is the empty object.
 */
export interface KnownStream {
  readonly streamId: StreamId.StreamId
  readonly category: unknown
  /** The aggregate id of the stream's events of its own category: one string for all of them. */
  readonly aggregateId: string | undefined
}

/** What a read of `streamId` knows from its stream row's `category` (see {@link KnownStream}). */
export const knownStream = (streamId: StreamId.StreamId, category: unknown): KnownStream => ({
  streamId,
  category,
  aggregateId: typeof category === "string" ? aggregateIdOf(streamId, category) : undefined
})

/**
 * Decodes one event row (the {@link eventColumns}), checking every field in
 * one pass: the reason it is not an event row, or the event. `data` and
 * `metadata.custom` are kept as the JSON parser made them (never copied, so
 * a stored `__proto__` key stays an own property); `metadata` keeps only its
 * known fields, as the `EventMetadata` Schema does. `streamId` and
 * `category` are branded, not checked again: an append validated them before
 * storing them, and a pattern test per row would slow every read. A read of
 * one stream passes what it knows of the stream (`known`, see {@link KnownStream}).
 */
export const decodeEventRow = (row: unknown, known?: KnownStream): RecordedEvent | string => {
  if (!Predicate.isRecord(row)) return "is not an object"
  const { eventId, streamVersion, eventType, schemaVersion, data, recordedAt } = row
  const streamId = known === undefined ? row.streamId : known.streamId
  const category = known === undefined || row.category !== null ? row.category : known.category
  const metadata = known === undefined || row.metadata !== null ? row.metadata : {}
  if (typeof eventId !== "string") return "eventId is not a string"
  if (typeof streamId !== "string") return "streamId is not a string"
  if (typeof category !== "string") return "category is not a string"
  if (typeof streamVersion !== "number") return "streamVersion is not a number"
  const globalPosition = bigintOf(row.globalPosition)
  if (globalPosition === undefined) return "globalPosition is not an integer"
  const transactionId = bigintOf(row.transactionId)
  if (transactionId === undefined) return "transactionId is not an integer"
  if (typeof eventType !== "string") return "eventType is not a string"
  if (typeof schemaVersion !== "number") return "schemaVersion is not a number"
  if (!isJsonObject(data)) return "data is not a JSON object"
  if (!isJsonObject(metadata)) return "metadata is not a JSON object"
  const { correlationId, causationId, custom } = metadata
  if (correlationId !== undefined && typeof correlationId !== "string") return "metadata.correlationId is not a string"
  if (causationId !== undefined && typeof causationId !== "string") return "metadata.causationId is not a string"
  if (custom !== undefined && !isJsonObject(custom)) return "metadata.custom is not a JSON object"
  if (typeof recordedAt !== "number" || !Number.isFinite(recordedAt)) return "recordedAt is not a time"
  return {
    eventId,
    streamId: StreamId.fromStored(streamId),
    category: StreamId.categoryFromStored(category),
    aggregateId:
      known?.aggregateId !== undefined && category === known.category ? known.aggregateId : aggregateIdOf(streamId, category),
    streamVersion,
    globalPosition,
    transactionId,
    eventType,
    schemaVersion,
    data,
    metadata: onlyMetadataFields(metadata)
      ? metadata
      : {
          ...(correlationId === undefined ? {} : { correlationId }),
          ...(causationId === undefined ? {} : { causationId }),
          ...(custom === undefined ? {} : { custom })
        },
    recordedAt: new Date(recordedAt)
  }
}

/**
 * Decodes one row of a load of `streamId` (the columns of `mire_load_page`,
 * migration 0021: `FoldableEvent`'s, but the stream id, which a load knows):
 * the reason it is not one, or the event.
 */
export const decodeFoldRow = (row: unknown, streamId: StreamId.StreamId): FoldableEvent | string => {
  if (!Predicate.isRecord(row)) return "is not an object"
  const { streamVersion, eventType, schemaVersion, data } = row
  if (typeof streamVersion !== "number") return "streamVersion is not a number"
  const globalPosition = bigintOf(row.globalPosition)
  if (globalPosition === undefined) return "globalPosition is not an integer"
  if (typeof eventType !== "string") return "eventType is not a string"
  if (typeof schemaVersion !== "number") return "schemaVersion is not a number"
  if (!isJsonObject(data)) return "data is not a JSON object"
  return { streamId, streamVersion, globalPosition, eventType, schemaVersion, data }
}

/** Decodes fold-column rows of `streamId`; a row of the wrong shape is a `StoreError`. */
export const decodeFoldRowsSync = (
  rows: ReadonlyArray<unknown>,
  streamId: StreamId.StreamId
): Array<FoldableEvent> | StoreError => {
  const out: Array<FoldableEvent> = []
  for (let i = 0; i < rows.length; i++) {
    const event = decodeFoldRow(rows[i], streamId)
    if (typeof event === "string") return corruptRow(i, event)
    out.push(event)
  }
  return out
}

/** The `StoreError` for a row that is not an event row. */
export const corruptRow = (index: number, reason: string): StoreError =>
  new StoreError({ kind: "Other", operation: "decode event row", cause: new Error(`row ${index}: ${reason}`) })

/**
 * Decodes rows `start…` of `rows` as events (rows of one stream's read when `known` is given, see
 * {@link KnownStream}); a row of the wrong shape is a `StoreError`.
 */
export const decodeEventRowsSync = (
  rows: ReadonlyArray<unknown>,
  start = 0,
  known?: KnownStream
): Array<RecordedEvent> | StoreError => {
  const out: Array<RecordedEvent> = []
  for (let i = start; i < rows.length; i++) {
    const event = decodeEventRow(rows[i], known)
    if (typeof event === "string") return corruptRow(i, event)
    out.push(event)
  }
  return out
}

/** Decodes event rows in one pass; a row of the wrong shape is a `StoreError`. */
export const decodeEventRows = (rows: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<RecordedEvent>, StoreError> =>
  Effect.suspend(() => {
    const events = decodeEventRowsSync(rows)
    return events instanceof StoreError ? Effect.fail(events) : Effect.succeed(events)
  })
