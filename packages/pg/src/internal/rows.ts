import * as Aggregate from "@mire/core/RecordedEvent"
import * as Effect from "effect/Effect"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { StoreError } from "@mire/core/EventStoreError"

/** The columns of an event row, named as `RecordedEvent`'s fields. */
export const eventColumns = `event_id::text AS "eventId", stream_id AS "streamId", category,
  stream_version::float8 AS "streamVersion", global_position::text AS "globalPosition",
  transaction_id::text AS "transactionId", event_type AS "eventType", schema_version AS "schemaVersion",
  data, metadata, recorded_at AS "recordedAt"`

/** An event row as read back from SQL. */
export const EventRow = Schema.Struct({
  ...Aggregate.RecordedEvent.fields,
  globalPosition: Schema.BigInt,
  transactionId: Schema.BigInt
})

const decodeRows = Schema.decodeUnknown(Schema.Array(EventRow))

/** Decodes event rows; a row of the wrong shape is a `StoreError`. */
export const decodeEventRows = (rows: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<Aggregate.RecordedEvent>, StoreError> =>
  decodeRows(rows).pipe(
    Effect.mapError(
      (e) =>
        new StoreError({
          kind: "Other",
          operation: "decode event row",
          cause: new Error(ParseResult.TreeFormatter.formatErrorSync(e))
        })
    )
  )
