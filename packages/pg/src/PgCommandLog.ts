/**
 * The PostgreSQL `CommandLog`: one row per handled command id in
 * `es_commands`, inserted in the transaction that appends the command's
 * events. `INSERT … ON CONFLICT (command_id) DO NOTHING` makes a concurrent
 * second transaction with the same id wait for the first one's uncommitted
 * key, then insert nothing once it commits (or insert, if it rolled back), so
 * exactly one of them appends.
 *
 * @since 0.2.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as CommandLog from "@mire/core/CommandLog"
import * as StreamId from "@mire/core/StreamId"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { refail } from "./internal/errors.js"
import { decodeRows, NonNegativeBigIntText, Timestamp } from "./internal/schema.js"
import * as PgSchema from "./PgSchema.js"

/** A row of `es_commands`, as {@link commandColumns} reads it. */
const CommandRow = Schema.Struct({
  command_id: Schema.String,
  stream_id: Schema.String,
  first_version: Schema.Int.pipe(Schema.positive()),
  last_version: Schema.Int.pipe(Schema.positive()),
  first_position: NonNegativeBigIntText,
  last_position: NonNegativeBigIntText,
  transaction_id: NonNegativeBigIntText,
  event_ids: Schema.Array(Schema.String),
  recorded_at: Timestamp
})

/** The columns of a {@link CommandRow}. */
const commandColumns = `command_id, stream_id, first_version::float8 AS first_version,
  last_version::float8 AS last_version, first_position::text AS first_position, last_position::text AS last_position,
  transaction_id::text AS transaction_id, event_ids::text[] AS event_ids, recorded_at`

const toRecord = (row: typeof CommandRow.Type): CommandLog.CommandRecord => ({
  commandId: row.command_id,
  // The row names a stream an append validated: branded, not checked again.
  streamId: StreamId.fromStored(row.stream_id),
  firstVersion: row.first_version,
  lastVersion: row.last_version,
  firstPosition: row.first_position,
  lastPosition: row.last_position,
  transactionId: row.transaction_id,
  eventIds: row.event_ids,
  recordedAt: row.recorded_at
})

/**
 * Builds the command log over the `SqlClient` (its statements join the
 * ambient transaction, as every store call's do).
 *
 * @since 0.2.0
 * @category constructors
 */
export const make: Effect.Effect<CommandLog.CommandLog, never, SqlClient.SqlClient> = Effect.gen(function* () {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const names = yield* PgSchema.PgSchema
  const table = names.table("es_commands")
  const columns = sql.literal(commandColumns)
  const decodeFind = decodeRows(CommandRow, "findCommand")
  const decodeRecord = decodeRows(CommandRow, "recordCommand")

  const first = (rows: ReadonlyArray<typeof CommandRow.Type>) => Option.map(Option.fromNullable(rows[0]), toRecord)

  return {
    find: (commandId) =>
      sql`SELECT ${columns} FROM ${table} WHERE command_id = ${commandId}`.pipe(
        refail("findCommand"),
        Effect.flatMap(decodeFind),
        Effect.map(first)
      ),
    record: (record) =>
      sql`
        INSERT INTO ${table} AS c
          (command_id, stream_id, first_version, last_version, first_position, last_position, transaction_id, event_ids)
        VALUES (${record.commandId}, ${record.streamId}, ${record.firstVersion}, ${record.lastVersion},
          ${String(record.firstPosition)}::bigint, ${String(record.lastPosition)}::bigint,
          ${String(record.transactionId)}::xid8, ${record.eventIds}::uuid[])
        ON CONFLICT (command_id) DO NOTHING
        RETURNING ${columns}`.pipe(refail("recordCommand"), Effect.flatMap(decodeRecord), Effect.map(first))
  }
})

/**
 * The PostgreSQL `CommandLog` (also part of `PgStore.layer`).
 *
 * @example
 * ```ts
 * import { PgClient } from "@effect/sql-pg"
 * import { CommandLog } from "@mire/core"
 * import { PgCommandLog } from "@mire/pg"
 * import { Effect, Redacted } from "effect"
 *
 * const program = Effect.flatMap(CommandLog.CommandLog, (log) => log.find("cmd-1"))
 * const runnable = program.pipe(
 *   Effect.provide(PgCommandLog.layer),
 *   Effect.provide(PgClient.layer({ url: Redacted.make("postgres://localhost/app") }))
 * )
 * ```
 * @since 0.2.0
 * @category layers
 */
export const layer: Layer.Layer<CommandLog.CommandLog, never, SqlClient.SqlClient> = Layer.effect(CommandLog.CommandLog, make)
