/**
 * The truncation primitives of the Postgres event store: a stream's extent
 * (read under its row lock when it is about to be truncated), the removal
 * of its events below a version, and its category's stream ids by keyset.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type * as EventStore from "@mire/core/EventStore"
import type * as Retention from "@mire/core/Retention"
import * as StreamId from "@mire/core/StreamId"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as PgSchema from "../PgSchema.js"
import { refail } from "./errors.js"
import { decodeRows, decodeSingle } from "./schema.js"

/** A version as the statements send it (`::float8`): a non-negative integer. */
const Version = Schema.NonNegativeInt

const ExtentRow = Schema.Struct({
  version: Version,
  truncated_before: Version,
  deleted: Schema.Boolean,
  snapshot_version: Schema.NullOr(Version),
  snapshot_schema_version: Schema.NullOr(Schema.Int),
  dead_letter_from: Schema.NullOr(Version),
  young_from: Schema.NullOr(Version)
})

const decodeExtent = decodeRows(ExtentRow, "streamExtent")
const decodeRemoved = decodeSingle(Schema.Struct({ removed: Version }), "removeBefore")
const decodeIds = decodeRows(Schema.Struct({ stream_id: Schema.String }), "streamIds")

/**
 * The primitives over `sql` (without transforms) in the schema of `names`.
 */
export const make = (
  sql: SqlClient.SqlClient,
  names: PgSchema.Names
): Pick<EventStore.Storage, "streamExtent" | "removeBefore" | "streamIdsPage"> => {
  const streamExtent: EventStore.Storage["streamExtent"] = (streamId, options) => {
    // The first version recorded at or after the cutoff: the index on (stream_id, stream_version)
    // walks the stream from its base and stops at the first young event.
    const youngFrom =
      options.cutoff === undefined
        ? sql`NULL::float8`
        : sql`(SELECT e.stream_version::float8 FROM ${names.events} e
               WHERE e.stream_id = st.stream_id AND e.recorded_at >= ${options.cutoff}
               ORDER BY e.stream_version LIMIT 1)`
    // With `lock`, the row lock comes first, in its own statement: the read after it then sees
    // whatever a snapshot write it waited for committed (one statement would keep its own snapshot).
    const locked = options.lock
      ? Effect.asVoid(sql`SELECT 1 FROM ${names.streams} WHERE stream_id = ${streamId} FOR UPDATE`)
      : Effect.void
    // The snapshot's stream and schema versions in one probe of its primary key; the lowest
    // dead-lettered version of the stream (any subscription, any status) by the dead letters' index.
    const read = sql`
      SELECT st.version::float8 AS version, st.truncated_before::float8 AS truncated_before,
        st.deleted_at IS NOT NULL AS deleted,
        sn.stream_version::float8 AS snapshot_version, sn.snapshot_version AS snapshot_schema_version,
        (SELECT min(dl.stream_version)::float8 FROM ${names.table("es_dead_letters")} dl
         WHERE dl.stream_id = st.stream_id) AS dead_letter_from,
        ${youngFrom} AS young_from
      FROM ${names.streams} st LEFT JOIN ${names.snapshots} sn ON sn.stream_id = st.stream_id
      WHERE st.stream_id = ${streamId}`
    return Effect.zipRight(locked, read).pipe(
      refail("streamExtent"),
      Effect.flatMap(decodeExtent),
      Effect.map((rows) =>
        Option.map(
          Option.fromNullable(rows[0]),
          (row): Retention.Extent => ({
            version: row.version,
            truncatedBefore: row.truncated_before,
            snapshotVersion: row.snapshot_version,
            snapshotSchemaVersion: row.snapshot_schema_version,
            deadLetterFrom: row.dead_letter_from,
            deleted: row.deleted,
            youngFrom: row.young_from
          })
        )
      )
    )
  }

  // One statement: the rows go and the stream records its new base (both or neither; a
  // data-modifying WITH runs whether or not the outer query reads it).
  const removeBefore: EventStore.Storage["removeBefore"] = (streamId, before) =>
    sql`
      WITH gone AS (
        DELETE FROM ${names.events} WHERE stream_id = ${streamId} AND stream_version < ${before} RETURNING 1
      ), based AS (
        UPDATE ${names.streams} SET truncated_before = ${before}
        WHERE stream_id = ${streamId} AND truncated_before < ${before} RETURNING 1
      )
      SELECT (SELECT count(*) FROM gone)::float8 AS removed`.pipe(
      refail("removeBefore"),
      Effect.flatMap(decodeRemoved),
      Effect.map((row) => row.removed)
    )

  const streamIdsPage: EventStore.Storage["streamIdsPage"] = (category, after, limit) =>
    sql`
      SELECT stream_id FROM ${names.streams}
      WHERE category = ${category} AND deleted_at IS NULL
        ${after === undefined ? sql`` : sql`AND stream_id COLLATE "C" > ${after}`}
      ORDER BY category, stream_id COLLATE "C" LIMIT ${limit}`.pipe(
      refail("streamIds"),
      Effect.flatMap(decodeIds),
      // The ids of streams an append validated: branded, not checked again.
      Effect.map((rows) => rows.map((row) => StreamId.fromStored(row.stream_id)))
    )

  return { streamExtent, removeBefore, streamIdsPage }
}
