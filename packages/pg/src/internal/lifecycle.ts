/**
 * The lifecycle primitives of the Postgres event store: a stream's archived
 * mark, its deletion with a tombstone (`mire_delete_stream`, migration
 * 0012), and the state an append reads when its compare-and-set refused it.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlError from "@effect/sql/SqlError"
import type * as EventStore from "@mire/core/EventStore"
import { ConcurrencyConflict, type StoreError, StreamArchived, StreamDeleted, StreamNotFound } from "@mire/core/EventStoreError"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type * as PgSchema from "../PgSchema.js"
import { refail } from "./errors.js"
import { decodeRows } from "./schema.js"

/** A version as the statements send it (`::float8`): a non-negative integer. */
const Version = Schema.NonNegativeInt

const decodeState = decodeRows(
  Schema.Struct({ version: Version, archived: Schema.Boolean, deleted: Schema.Boolean }),
  "streamState"
)

const decodeDeleted = decodeRows(
  Schema.Struct({ tombstone_version: Version, category: Schema.String, tombstoned_now: Schema.Boolean, done: Schema.Boolean }),
  "deleteStream"
)

/**
 * Events a deletion removes per transaction (`mire_delete_stream`): short
 * transactions, so a big stream's deletion never holds the xmin horizon
 * (and every subscription) back for long.
 */
export const deleteBatch = 1000

/**
 * Why a stream refused an append, from its row: deleted, archived, or its
 * version (a lost expectation). `actual` is its version (0: no stream).
 */
export const refusal = (
  request: EventStore.StorableAppend,
  state: { readonly version: number; readonly archived: boolean; readonly deleted: boolean } | undefined
): ConcurrencyConflict | StreamArchived | StreamDeleted => {
  if (state?.deleted === true) return new StreamDeleted({ streamId: request.streamId, tombstoneVersion: state.version })
  if (state?.archived === true) return new StreamArchived({ streamId: request.streamId })
  const actual = state?.version ?? 0
  return new ConcurrencyConflict({
    streamId: request.streamId,
    expected: ExpectedVersion.format(request.expected),
    actual: actual === 0 ? null : actual
  })
}

/**
 * The primitives over `sql` (without transforms) in the schema of `names`;
 * `deleted` runs after a deletion with the tombstone's category (to wake
 * subscriptions, as after an append).
 */
export const make = (
  sql: SqlClient.SqlClient,
  names: PgSchema.Names,
  deleted: (categories: ReadonlyArray<string>) => Effect.Effect<void, SqlError.SqlError>
) => {
  /** The refusal of an append whose compare-and-set returned no row. */
  const refusalOf = (request: EventStore.StorableAppend) =>
    sql`
      SELECT version::float8 AS version, archived_at IS NOT NULL AS archived, deleted_at IS NOT NULL AS deleted
      FROM ${names.streams} WHERE stream_id = ${request.streamId}`.pipe(
      Effect.flatMap(decodeState),
      Effect.map((rows) => refusal(request, rows[0]))
    )

  const stateOf = (streamId: string) =>
    sql`
      SELECT version::float8 AS version, archived_at IS NOT NULL AS archived, deleted_at IS NOT NULL AS deleted
      FROM ${names.streams} WHERE stream_id = ${streamId}`.pipe(refail("setArchived"), Effect.flatMap(decodeState))

  const setArchived: EventStore.Storage["setArchived"] = (streamId, archived) =>
    sql`
      UPDATE ${names.streams} SET archived_at = CASE WHEN ${archived} THEN coalesce(archived_at, now()) END
      WHERE stream_id = ${streamId} AND deleted_at IS NULL
      RETURNING 1 AS one`.pipe(
      refail("setArchived"),
      Effect.flatMap((rows) =>
        rows.length > 0
          ? Effect.void
          : Effect.flatMap(stateOf(streamId), (state): Effect.Effect<never, StreamNotFound | StreamDeleted> => {
              const row = state[0]
              if (row === undefined) return Effect.fail(new StreamNotFound({ streamId }))
              // Deleted (or deleted and gone again between the two statements: still refused).
              return Effect.fail(new StreamDeleted({ streamId, tombstoneVersion: row.version }))
            })
      )
    )

  // One short transaction per call (each statement commits on its own): the stream is marked deleted
  // first, then its events go a batch at a time, and the last call writes the tombstone.
  const deleteStep = (streamId: string, tombstone: EventStore.StorableEvent) =>
    sql.unsafe(`SELECT * FROM ${names.qualify("mire_delete_stream")}($1, $2::uuid, $3, $4)`, [
      streamId,
      tombstone.eventId,
      tombstone.eventType,
      deleteBatch
    ]).pipe(Effect.flatMap(decodeDeleted))

  const deleteStream: EventStore.Storage["deleteStream"] = (streamId, tombstone) => {
    const run: Effect.Effect<number, StreamNotFound | StoreError | SqlError.SqlError> = Effect.flatMap(deleteStep(streamId, tombstone), (rows) => {
      const row = rows[0]
      if (row === undefined) return Effect.fail(new StreamNotFound({ streamId }))
      if (!row.done) return run
      return Effect.as(row.tombstoned_now ? deleted([row.category]) : Effect.void, row.tombstone_version)
    })
    return run.pipe(refail("deleteStream"))
  }

  return { refusalOf, setArchived, deleteStream }
}
