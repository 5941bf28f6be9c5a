/**
 * What every \`mire\` command shares: \`--url\`, \`--schema\`, \`--verbose\`,
 * the database connection in that schema, and how a failure is printed.
 * Each command module builds on {@link withDatabase}.
 */
import type * as PgClient from "@effect/sql-pg/PgClient"
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Options from "@effect/cli/Options"
import * as PgSchema from "@mire/pg/PgSchema"
import * as PgStore from "@mire/pg/PgStore"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Console from "effect/Console"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"
import * as Format from "../format.js"

/**
 * A command failed; its cause is already printed on stderr.
 *
 * @since 0.1.0
 * @category errors
 */
export class CommandFailed extends Data.TaggedError("CommandFailed")<{}> {
  override get message(): string {
    return "command failed"
  }
}

export const common = {
  url: Options.redacted("url").pipe(
    Options.withDescription("PostgreSQL URL (default: the DATABASE_URL environment variable)"),
    Options.optional
  ),
  schema: Options.text("schema").pipe(
    Options.withDescription(
      "PostgreSQL schema of mire's tables, functions and notification channels (default: the MIRE_SCHEMA environment variable, else public)"
    ),
    Options.withFallbackConfig(Config.string("MIRE_SCHEMA")),
    Options.withDefault("public")
  ),
  verbose: Options.boolean("verbose").pipe(Options.withDescription("print the full cause of a failure"))
}

export interface Common {
  readonly url: Option.Option<Redacted.Redacted>
  readonly schema: string
  readonly verbose: boolean
}

export const database = (url: Option.Option<Redacted.Redacted>) =>
  PgStore.clientConfig({
    url: Option.match(url, { onNone: () => Config.redacted("DATABASE_URL"), onSome: Config.succeed }),
    applicationName: Config.succeed("mire"),
    maxConnections: Config.succeed(3)
  })

/**
 * Runs a command against the database, in the schema of \`--schema\` (a name
 * mire does not accept fails before connecting); prints a failure as one
 * line (or its full cause when verbose).
 */
export const withDatabase =
  (options: Common) =>
  <A, E>(effect: Effect.Effect<A, E, PgClient.PgClient | SqlClient.SqlClient>): Effect.Effect<void, CommandFailed> =>
    effect.pipe(
      Effect.provide(Layer.fresh(database(options.url))),
      Effect.provide(PgSchema.layer(options.schema)),
      Effect.asVoid,
      Effect.catchAllCause((cause) =>
        Cause.isInterruptedOnly(cause)
          ? Effect.interrupt
          : Effect.zipRight(
              Console.error(options.verbose ? Cause.pretty(cause) : Format.errorLine(cause)),
              Effect.fail(new CommandFailed())
            )
      )
    )

/**
 * What a command group does when no subcommand is given: one line on stderr
 * naming the subcommands (`which`), and a failure.
 */
export const missing = (which: string, help: string): Effect.Effect<never, CommandFailed> =>
  Effect.zipRight(Console.error(`mire: missing command: ${which} (${help} --help lists them)`), Effect.fail(new CommandFailed()))
