/**
 * How the `mire` command line prints: the status table, one line per tailed
 * event, one line per error.
 *
 * @since 0.1.0
 */
import type * as Cursor from "@mire/core/Cursor"
import type { RecordedEvent } from "@mire/core/RecordedEvent"
import type * as PgMigrations from "@mire/pg/PgMigrations"
import type * as PgStatus from "@mire/pg/PgStatus"
import * as Cause from "effect/Cause"
import * as ConfigError from "effect/ConfigError"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"

/**
 * A cursor as `transactionId:position`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const cursor = (c: Cursor.Cursor): string => `${c.transactionId}:${c.position}`

const duration = (millis: number): string =>
  millis < 1_000
    ? `${Math.round(millis)} ms`
    : millis < 120_000
      ? `${(millis / 1_000).toFixed(1)} s`
      : millis < 7_200_000
        ? `${(millis / 60_000).toFixed(1)} min`
        : `${(millis / 3_600_000).toFixed(1)} h`

/**
 * A plain-text table: columns padded to their widest cell, two spaces
 * apart, the last column unpadded.
 *
 * @since 0.2.0
 * @category formatting
 */
export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd()
  return [line(header), ...rows.map(line)].join("\n")
}

/**
 * The readable form of `mire status`: a restore warning first (stored
 * transaction ids ahead of the server's, with the recovery), the commit-safe
 * head, one row per subscription (its categories, lag over them, its dead
 * letters, and `ok` or `FAILED`), each failure on its own line, every
 * projection runner with the units it leads, then the oldest open
 * transaction.
 *
 * @since 0.1.0
 * @category formatting
 */
export const status = (s: PgStatus.Status): string => {
  const rows = s.subscriptions.map((sub) => [
    sub.subscriptionId,
    sub.leaseHolder === null ? "-" : sub.leaseActive ? sub.leaseHolder : `${sub.leaseHolder} (expired)`,
    sub.fenceToken.toString(),
    sub.leasedUntil === null ? "-" : sub.leasedUntil.toISOString(),
    cursor(sub.checkpoint),
    sub.categories === null ? "*" : sub.categories.join(","),
    sub.lag.toString(),
    sub.deadLetters.toString(),
    sub.failure === null ? "ok" : "FAILED"
  ])
  const subscriptions =
    rows.length === 0
      ? "no subscriptions"
      : table(["SUBSCRIPTION", "LEASE HOLDER", "FENCE", "LEASED UNTIL", "CHECKPOINT", "CATEGORIES", "LAG", "DEAD LETTERS", "STATE"], rows)
  const failures = s.subscriptions.flatMap((sub) =>
    sub.failure === null ? [] : [`${sub.subscriptionId} failed at ${sub.failure.at.toISOString()}: ${sub.failure.message}`]
  )
  const restore =
    s.restore === null
      ? []
      : [
          `RESTORE DETECTED: server's next transaction id ${s.restore.serverTransactionId}, ` +
            `log's highest ${s.restore.logTransactionId ?? "-"}` +
            (s.restore.checkpointsAhead.length === 0
              ? ""
              : `, checkpoints ahead: ${s.restore.checkpointsAhead.map((c) => `${c.subscriptionId} (${c.transactionId})`).join(", ")}`),
          s.restore.message,
          ""
        ]
  const workers =
    s.workers.length === 0
      ? []
      : [
          "",
          table(
            ["WORKER", "HEARTBEAT", "LEADS"],
            s.workers.map((w) => [
              w.workerId,
              `${duration(w.silentMillis)} ago`,
              w.leads.length === 0 ? "-" : `${w.leads.length}: ${w.leads.join(" ")}`
            ])
          )
        ]
  const t = s.oldestTransaction
  const oldest =
    t === null
      ? "oldest open transaction: none"
      : `oldest open transaction: pid ${t.pid}, ${duration(t.ageMillis)}, ${t.state ?? "unknown state"}, ` +
        `database ${t.database ?? "-"}, application ${t.applicationName === "" ? "-" : t.applicationName}: ${t.query}`
  return [
    ...restore,
    `log head (commit-safe): ${cursor(s.head)}`,
    "",
    subscriptions,
    ...(failures.length === 0 ? [] : ["", ...failures]),
    ...workers,
    "",
    oldest
  ].join("\n")
}

/**
 * One tailed event: position, stream id, version, type, compact data.
 *
 * @since 0.1.0
 * @category formatting
 */
export const event = (e: RecordedEvent): string =>
  `${e.globalPosition} ${e.streamId} v${e.streamVersion} ${e.eventType} ${JSON.stringify(e.data)}`

/**
 * A dry run: each pending migration's SQL under a comment naming it.
 *
 * @since 0.1.0
 * @category formatting
 */
export const dryRun = (pending: ReadonlyArray<PgMigrations.Migration>): string =>
  pending.length === 0
    ? "-- up to date: no pending migrations"
    : pending.map((m) => `-- mire migration ${m.name}\n${m.sql.trimEnd()}\n`).join("\n")

/**
 * What `mire migrate` applied.
 *
 * @since 0.1.0
 * @category formatting
 */
export const applied = (names: ReadonlyArray<string>): string =>
  names.length === 0 ? "up to date: no pending migrations" : names.map((name) => `applied ${name}`).join("\n")

const configMessage = (error: ConfigError.ConfigError): string =>
  ConfigError.isMissingDataOnly(error) ? "no database: set DATABASE_URL or pass --url" : `bad configuration: ${error}`

/**
 * The one line an error prints (no stack trace).
 *
 * @since 0.1.0
 * @category formatting
 */
export const errorLine = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  const error = Option.isSome(failure) ? failure.value : Cause.squash(cause)
  const text = ConfigError.isConfigError(error)
    ? configMessage(error)
    : Predicate.hasProperty(error, "message") && typeof error.message === "string" && error.message !== ""
      ? error.message
      : String(error)
  return `mire: ${text.replace(/\s*\n\s*/g, " ")}`
}
