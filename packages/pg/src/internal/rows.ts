import { isJsonObject, type RecordedEvent } from "@mire/core/RecordedEvent"
import { StoreError } from "@mire/core/EventStoreError"
import * as Effect from "effect/Effect"
import * as Predicate from "effect/Predicate"

/**
 * The columns of an event row, named as `RecordedEvent`'s fields.
 * `recordedAt` comes as epoch milliseconds (a `float8`, which the driver
 * hands over as a number): building a `Date` from it is far cheaper than
 * parsing the timestamp's text.
 */
export const eventColumns = `event_id::text AS "eventId", stream_id AS "streamId", category,
  stream_version::float8 AS "streamVersion", global_position::text AS "globalPosition",
  transaction_id::text AS "transactionId", event_type AS "eventType", schema_version AS "schemaVersion",
  data, metadata, floor(extract(epoch FROM recorded_at) * 1000)::float8 AS "recordedAt"`

const integerText = /^-?[0-9]+$/

const bigintOf = (u: unknown): bigint | undefined =>
  typeof u === "string" && integerText.test(u) ? BigInt(u) : undefined

/**
 * Decodes one event row (the {@link eventColumns}), checking every field in
 * one pass: the reason it is not an event row, or the event. `data` and
 * `metadata.custom` are kept as the JSON parser made them (never copied, so
 * a stored `__proto__` key stays an own property); `metadata` keeps only its
 * known fields, as the `EventMetadata` Schema does.
 */
export const decodeEventRow = (row: unknown): RecordedEvent | string => {
  if (!Predicate.isRecord(row)) return "is not an object"
  const { eventId, streamId, category, streamVersion, eventType, schemaVersion, data, metadata, recordedAt } = row
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
    streamId,
    category,
    streamVersion,
    globalPosition,
    transactionId,
    eventType,
    schemaVersion,
    data,
    metadata: {
      ...(correlationId === undefined ? {} : { correlationId }),
      ...(causationId === undefined ? {} : { causationId }),
      ...(custom === undefined ? {} : { custom })
    },
    recordedAt: new Date(recordedAt)
  }
}

/** The `StoreError` for a row that is not an event row. */
export const corruptRow = (index: number, reason: string): StoreError =>
  new StoreError({ kind: "Other", operation: "decode event row", cause: new Error(`row ${index}: ${reason}`) })

/** Decodes rows `start…` of `rows` as events; a row of the wrong shape is a `StoreError`. */
export const decodeEventRowsSync = (rows: ReadonlyArray<unknown>, start = 0): Array<RecordedEvent> | StoreError => {
  const out: Array<RecordedEvent> = []
  for (let i = start; i < rows.length; i++) {
    const event = decodeEventRow(rows[i])
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
