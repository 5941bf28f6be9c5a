/**
 * `mire dead-letters list|retry|discard`: the dead letters of projections
 * that run with `onFailure: "skip"` (`DeadLetters`). `list` shows them (all,
 * or one subscription's; `--json` for machines); `retry` marks failed ones
 * for redelivery by the projection's leader at its next batch boundary;
 * `discard` deletes them (the events parked behind a discarded one are then
 * redelivered, in order).
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as DeadLetters from "@mire/core/DeadLetters"
import * as PgDeadLetterStore from "@mire/pg/PgDeadLetterStore"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Format from "../format.js"
import { common, missing, withDatabase } from "./command.js"

const encode = Schema.encodeSync(Schema.Array(DeadLetters.DeadLetter))

/** The longest error a table row shows (`--json` has it whole). */
const shownError = 120

const oneLine = (text: string): string => {
  const line = text.replace(/\s*\n\s*/g, " ")
  return line.length > shownError ? `${line.slice(0, shownError - 1)}…` : line
}

/** Dead letters as a table, one per row, with a summary per subscription. */
const describe = (letters: ReadonlyArray<DeadLetters.DeadLetter>): string => {
  if (letters.length === 0) return "no dead letters"
  const rows = letters.map((l) => [
    l.id.toString(),
    l.subscriptionId,
    l.streamId,
    `v${l.streamVersion}`,
    l.globalPosition.toString(),
    l.eventType,
    l.status,
    l.attempts.toString(),
    l.lastFailedAt.toISOString(),
    oneLine(l.error)
  ])
  const summary = [...DeadLetters.countsOf(letters)].map(
    ([subscriptionId, c]) => `${subscriptionId}: ${c.failed} failed, ${c.retry} to retry, ${c.parked} parked`
  )
  return [
    Format.table(["ID", "SUBSCRIPTION", "STREAM", "VERSION", "POSITION", "TYPE", "STATUS", "ATTEMPTS", "LAST FAILED", "ERROR"], rows),
    "",
    ...summary
  ].join("\n")
}

const list = Command.make(
  "list",
  {
    ...common,
    subscription: Args.text({ name: "subscription" }).pipe(
      Args.withDescription("only this subscription's, or this partitioned projection's shards' (<id>#<k>of<K>) (default: every subscription's)"),
      Args.optional
    ),
    json: Options.boolean("json").pipe(Options.withDescription("print JSON (bigints as strings, ISO 8601 times)"))
  },
  (options) =>
    withDatabase(options)(
      Effect.flatMap(DeadLetters.list(options.subscription), (letters) =>
        Console.log(options.json ? JSON.stringify(encode(letters), null, 2) : describe(letters))
      ).pipe(Effect.provide(PgDeadLetterStore.layer))
    )
).pipe(
  Command.withDescription(
    "List dead letters: id, subscription, stream, version, position, type, status (failed, retry, parked), attempts, last failure and error."
  )
)

const selected = {
  ids: Args.text({ name: "id" }).pipe(Args.withDescription("dead letter ids (from `mire dead-letters list`)"), Args.repeated),
  all: Options.text("all").pipe(
    Options.withDescription("every dead letter of this subscription (of a partitioned projection: of all its shards, <id>#<k>of<K>) instead of ids"),
    Options.optional
  )
}

const selectionOf = (options: { readonly ids: ReadonlyArray<string>; readonly all: Option.Option<string> }) =>
  DeadLetters.selection({ ids: options.ids, all: Option.getOrUndefined(options.all) })

const retry = Command.make("retry", { ...common, ...selected }, (options) =>
  withDatabase(options)(
    Effect.gen(function* () {
      const marked = yield* DeadLetters.retry(yield* selectionOf(options))
      yield* Console.log(
        `marked ${marked} dead letter(s) for retry: the projection's leader redelivers them at its next batch boundary ` +
          "(with the events parked behind them, in order); only failed ones are marked"
      )
    }).pipe(Effect.provide(PgDeadLetterStore.layer))
  )
).pipe(
  Command.withDescription(
    "Mark failed dead letters (by id, or --all <subscription>) for redelivery: the leader handles them again at its next batch boundary; success removes them, failure records the attempts again."
  )
)

const discard = Command.make("discard", { ...common, ...selected }, (options) =>
  withDatabase(options)(
    Effect.gen(function* () {
      const deleted = yield* DeadLetters.discard(yield* selectionOf(options))
      yield* Console.log(
        `discarded ${deleted} dead letter(s); events parked behind a discarded one are redelivered at the leader's next batch boundary`
      )
    }).pipe(Effect.provide(PgDeadLetterStore.layer))
  )
).pipe(
  Command.withDescription(
    "Delete dead letters (by id, or --all <subscription>) without handling them; the events parked behind a discarded one are then redelivered, in order."
  )
)

/**
 * The `dead-letters` command.
 *
 * @since 0.2.0
 * @category commands
 */
export const deadLetters = Command.make("dead-letters", {}, () =>
  missing("dead-letters list, retry or discard", "mire dead-letters")
).pipe(
  Command.withDescription(
    "The events projections with onFailure \"skip\" set aside: list them, retry them, or discard them."
  ),
  Command.withSubcommands([list, retry, discard])
)
