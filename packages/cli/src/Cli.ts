/**
 * The `mire` command line: `migrate`, `status`, `tail`, `reset`, `stream`
 * and `dead-letters`. Every command takes `--url` (else `DATABASE_URL`),
 * `--schema` and `--verbose`; a failure prints one line on stderr (the full
 * cause with `--verbose`) and exits non-zero.
 *
 * The commands are thin: the SQL lives in `@mire/pg` (`PgMigrations`,
 * `PgStatus`, `PgSubscriptionStore`), the ordering in `@mire/core`'s
 * `Subscription`; this module parses and prints.
 *
 * @since 0.1.0
 */
import * as Args from "@effect/cli/Args"
import type * as CliApp from "@effect/cli/CliApp"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import type * as ValidationError from "@effect/cli/ValidationError"
import * as Subscription from "@mire/core/Subscription"
import type * as Checkpoint from "@mire/core/Checkpoint"
import * as SubscriptionStore from "@mire/core/SubscriptionStore"
import * as PgMigrations from "@mire/pg/PgMigrations"
import * as PgStatus from "@mire/pg/PgStatus"
import * as PgSubscriptionStore from "@mire/pg/PgSubscriptionStore"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as Format from "./format.js"
import * as InternalCommand from "./internal/command.js"
import { common, missing, withDatabase } from "./internal/command.js"
import { deadLetters } from "./internal/deadLetters.js"
import { reset } from "./internal/reset.js"
import { stream } from "./internal/stream.js"

/**
 * A command failed; its cause is already printed on stderr.
 *
 * @since 0.1.0
 * @category errors
 */
export const CommandFailed: typeof InternalCommand.CommandFailed = InternalCommand.CommandFailed

/**
 * A command failed; its cause is already printed on stderr.
 *
 * @since 0.1.0
 * @category errors
 */
export type CommandFailed = InternalCommand.CommandFailed

const migrate = Command.make(
  "migrate",
  {
    ...common,
    dryRun: Options.boolean("dry-run").pipe(
      Options.withDescription("print the SQL of each pending migration; apply nothing")
    )
  },
  (options) =>
    withDatabase(options)(
      options.dryRun
        ? Effect.flatMap(PgMigrations.pending, (pending) => Console.log(Format.dryRun(pending)))
        : Effect.flatMap(PgMigrations.migrate(), (applied) => Console.log(Format.applied(applied)))
    )
).pipe(Command.withDescription("Apply mire's pending migrations (the runner of PgMigrations.migrate)."))

const status = Command.make(
  "status",
  {
    ...common,
    json: Options.boolean("json").pipe(Options.withDescription("print JSON (bigints as strings, ISO 8601 times)"))
  },
  (options) =>
    withDatabase(options)(
      Effect.flatMap(PgStatus.status, (s) =>
        Console.log(options.json ? JSON.stringify(PgStatus.toJson(s), null, 2) : Format.status(s))
      )
    )
).pipe(
  Command.withDescription(
    "Every subscription in the database: lease holder, fence token, lease expiry, checkpoint, lag; and the oldest open transaction holding back the xmin horizon."
  )
)

/**
 * A subscription store that starts at `start` and never writes a checkpoint:
 * what `tail` follows leaves no row behind. The start is a full checkpoint
 * (what is delivered at that cursor), so a stream inverted across it is
 * delivered in order, not refused as a regression.
 */
const ephemeral = (
  store: SubscriptionStore.SubscriptionStore,
  start: Checkpoint.Checkpoint
): SubscriptionStore.SubscriptionStore => ({
  ...store,
  readCheckpoint: () => Effect.succeed(Option.some(start)),
  writeCheckpoint: () => Effect.succeed(false),
  describe: () => Effect.void,
  recordFailure: () => Effect.void
})

const tail = Command.make(
  "tail",
  {
    ...common,
    categories: Args.text({ name: "category" }).pipe(
      Args.withDescription("categories to follow (none: every category)"),
      Args.repeated
    )
  },
  (options) =>
    withDatabase(options)(
      Effect.gen(function* () {
        const start = yield* PgStatus.head
        const filter: Subscription.Filter = options.categories.length === 0 ? {} : { categories: options.categories }
        const store = ephemeral(yield* SubscriptionStore.SubscriptionStore, yield* Subscription.checkpointFor(filter, start))
        const subscription = yield* Subscription.make({
          subscriptionId: "mire-tail",
          ...(options.categories.length === 0 ? {} : { categories: options.categories })
        }).pipe(Effect.provideService(SubscriptionStore.SubscriptionStore, store))
        yield* Console.error(
          `mire: following ${options.categories.length === 0 ? "every category" : options.categories.join(", ")} after ${Format.cursor(start)} (Ctrl-C stops)`
        )
        yield* subscription.batches.pipe(
          Stream.flattenIterables,
          Stream.runForEach((event) => Console.log(Format.event(event)))
        )
      }).pipe(Effect.scoped, Effect.provide(PgSubscriptionStore.layer))
    )
).pipe(
  Command.withDescription(
    "Follow committed events live, in the order a subscription delivers them (commit-safe, per-stream order); one line per event. Ctrl-C stops; nothing is written."
  )
)

/**
 * The `mire` command and its subcommands.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("mire", {}, () =>
  missing("migrate, status, tail, reset, stream or dead-letters", "mire")
).pipe(
  Command.withDescription("Operate a mire event store on PostgreSQL."),
  Command.withSubcommands([migrate, status, tail, stream, reset, deadLetters])
)

/**
 * Runs `mire` on `argv` (`[node, script, ...args]`).
 *
 * @example
 * ```ts
 * import { NodeContext, NodeRuntime } from "@effect/platform-node"
 * import * as Cli from "@mire/cli/Cli"
 * import { Effect } from "effect"
 *
 * // What the `mire` binary does: parse the process's arguments and run the command.
 * const main = () => Cli.run(process.argv).pipe(Effect.provide(NodeContext.layer), NodeRuntime.runMain)
 * ```
 * @since 0.1.0
 * @category running
 */
export const run: (
  argv: ReadonlyArray<string>
) => Effect.Effect<void, CommandFailed | ValidationError.ValidationError, CliApp.CliApp.Environment> = Command.run(
  command,
  { name: "mire", version: "0.1.0" }
)
