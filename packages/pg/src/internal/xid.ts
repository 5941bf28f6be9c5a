/**
 * Detects a log or checkpoint whose transaction ids are ahead of the server's
 * (a dump/restore or logical-replication cut-over into a fresh cluster, whose
 * xid counter starts low): every new event would sort behind every checkpoint.
 *
 * The server's bound is `pg_snapshot_xmax(pg_current_snapshot())`, which,
 * unlike `pg_current_xact_id()`, assigns no transaction id. Every committed
 * row's `transaction_id` is below it; the only visible row that may not be is
 * one written by the checking transaction itself
 * (`pg_current_xact_id_if_assigned()`, which assigns nothing either).
 */
import { XidAhead } from "@mire/core/EventStoreError"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as PgSchema from "../PgSchema.js"
import { NonNegativeBigIntText } from "./schema.js"

/** Columns to select with any statement: the server's bound, the caller's own xid, the log's highest (of `names`' log). */
export const xidColumns = (names: PgSchema.Names): string => `pg_snapshot_xmax(pg_current_snapshot())::text AS xid_server,
  pg_current_xact_id_if_assigned()::text AS xid_own,
  (SELECT transaction_id FROM ${names.qualify("es_events")} ORDER BY transaction_id DESC LIMIT 1)::text AS xid_log`

/** The row of {@link xidColumns}: transaction ids as `bigint`s. */
export const XidRow = Schema.Struct({
  xid_server: NonNegativeBigIntText,
  xid_own: Schema.NullOr(NonNegativeBigIntText),
  xid_log: Schema.NullOr(NonNegativeBigIntText)
})

/** The decoded row of {@link xidColumns}. */
export type XidRow = typeof XidRow.Type

/** Whether a stored transaction id is ahead of the server. */
export const isAhead = (row: XidRow, stored: bigint): boolean =>
  stored >= row.xid_server && (row.xid_own === null || stored !== row.xid_own)

/** The error for the log or the checkpoint (checked first: it names the subscription), if either is ahead. */
export const check = (row: XidRow, subscriptionId: string, checkpoint: bigint | undefined): Option.Option<XidAhead> => {
  const server = row.xid_server
  if (checkpoint !== undefined && isAhead(row, checkpoint)) {
    return Option.some(
      new XidAhead({ subscriptionId, source: "checkpoint", storedTransactionId: checkpoint, serverTransactionId: server })
    )
  }
  if (row.xid_log !== null && isAhead(row, row.xid_log)) {
    return Option.some(
      new XidAhead({ subscriptionId, source: "log", storedTransactionId: row.xid_log, serverTransactionId: server })
    )
  }
  return Option.none()
}
