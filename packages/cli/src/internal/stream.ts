/**
 * `mire stream archive|unarchive|delete|truncate`: a stream's lifecycle from
 * the command line, for the streams named or every stream of a category
 * (`--category`). A change asks for confirmation first (`--yes` skips the
 * question; without a terminal, `--yes` is required), `--dry-run` says what
 * would happen and changes nothing, and a category run draws a progress bar
 * on stderr when stderr is a terminal. Each stream is changed in its own
 * short transaction; a stream that cannot be (missing, deleted, no snapshot
 * to truncate to) is reported and the others go on; the exit status is 1
 * when any was refused. A dry run reads each stream without locking it and
 * decides with the pure rules (`Retention.truncation`), so it changes,
 * locks and writes nothing.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Prompt from "@effect/cli/Prompt"
import * as Terminal from "@effect/platform/Terminal"
import * as EventStore from "@mire/core/EventStore"
import { StreamDeleted, StreamNotFound, type StoreError } from "@mire/core/EventStoreError"
import * as Retention from "@mire/core/Retention"
import * as PgEventStore from "@mire/pg/PgEventStore"
import * as Chunk from "effect/Chunk"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { common, missing, withDatabase } from "./command.js"

/**
 * A `mire stream` command refused to run, or some streams were refused; the
 * message is what `mire:` prints.
 */
export class Refused extends Data.TaggedError("Refused")<{ readonly message: string }> {}

/**
 * Where the progress bar is drawn: stderr, when it is a terminal (tests
 * provide their own).
 */
export class ProgressOutput extends Context.Reference<ProgressOutput>()("@mire/cli/ProgressOutput", {
  defaultValue: (): { readonly isTTY: boolean; readonly write: (text: string) => Effect.Effect<void> } => ({
    isTTY: process.stderr.isTTY === true,
    write: (text) => Effect.sync(() => void process.stderr.write(text))
  })
}) {}

const width = 30

/** One frame of the bar: `\r` and the line, redrawn in place. */
export const progressLine = (label: string, done: number, total: number): string => {
  const filled = total === 0 ? width : Math.floor((done * width) / total)
  const percent = total === 0 ? 100 : Math.floor((done * 100) / total)
  return `\r${label} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${done}/${total} streams ${percent}%`
}

/**
 * A progress bar over `total` streams, drawn when `enabled` and stderr is a terminal: redrawn
 * at each thousandth of the way (so a million streams cost a thousand redraws), and at the end.
 */
const progressBar = (enabled: boolean, label: string, total: number) =>
  Effect.map(ProgressOutput, (output) => {
    const on = enabled && output.isTTY
    let step = -1
    const draw = (done: number) => {
      const next = total === 0 ? 1000 : Math.floor((done * 1000) / total)
      if (!on || (next === step && done !== total)) return Effect.void
      step = next
      return output.write(progressLine(label, done, total))
    }
    return { tick: draw, finish: on ? output.write("\n") : Effect.void }
  })

const options = {
  ...common,
  streams: Args.text({ name: "stream" }).pipe(Args.withDescription("stream ids (or --category)"), Args.repeated),
  category: Options.text("category").pipe(
    Options.withDescription("every stream of this category (deleted ones left out)"),
    Options.optional
  ),
  yes: Options.boolean("yes").pipe(
    Options.withAlias("y"),
    Options.withDescription("do not ask for confirmation (and draw no progress bar); required without a terminal")
  ),
  dryRun: Options.boolean("dry-run").pipe(Options.withDescription("say what would happen; change nothing"))
}

interface Targets {
  readonly ids: ReadonlyArray<string>
  /** The category, when the streams are all of one (`--category`). */
  readonly category: Option.Option<string>
}

/** The streams named, or every stream of `--category`; exactly one of them. */
const targetsOf = (streams: ReadonlyArray<string>, category: Option.Option<string>) =>
  Option.match(category, {
    onNone: () =>
      streams.length === 0
        ? Effect.fail(new Refused({ message: "name the streams, or --category <category> for every stream of a category" }))
        : Effect.succeed<Targets>({ ids: streams, category }),
    onSome: (name) =>
      streams.length > 0
        ? Effect.fail(new Refused({ message: "give stream ids or --category, not both" }))
        : Effect.map(Stream.runCollect(EventStore.streamIds(name)), (ids): Targets => ({ ids: Chunk.toReadonlyArray(ids), category }))
  })

const describeTargets = (targets: Targets): string =>
  Option.match(targets.category, {
    onSome: (category) => `all ${targets.ids.length} streams of category ${category}`,
    onNone: () => {
      const shown = targets.ids.slice(0, 5).join(", ")
      const more = targets.ids.length > 5 ? `, … ${targets.ids.length - 5} more` : ""
      return `${targets.ids.length} stream${targets.ids.length === 1 ? "" : "s"} (${shown}${more})`
    }
  })

/** Asks `question` unless `--yes`; without a terminal, refuses (a script must say `--yes`). */
const confirm = (yes: boolean, question: string, terminal: Terminal.Terminal) =>
  yes
    ? Effect.void
    : Effect.flatMap(terminal.isTTY, (tty) =>
        tty
          ? Prompt.confirm({ message: question, initial: false }).pipe(
              Effect.provideService(Terminal.Terminal, terminal),
              Effect.orElseSucceed(() => false),
              Effect.flatMap((ok) => (ok ? Effect.void : Effect.fail(new Refused({ message: "cancelled; nothing changed" }))))
            )
          : Effect.fail(new Refused({ message: "stdin is not a terminal, so there is no one to ask: pass --yes to confirm" }))
      )

/** One stream's result: its value, or the typed error that refused it (a store failure stops the run). */
type Result<A, E> = Either.Either<A, E>

const isStoreError = (e: { readonly _tag: string }): e is StoreError => e._tag === "StoreError"

/** Runs `f` on each target in order, drawing the bar; a refusal is kept and the run goes on. */
const eachTarget = <A, E extends { readonly _tag: string }>(
  targets: Targets,
  label: string,
  yes: boolean,
  f: (streamId: string) => Effect.Effect<A, E, EventStore.EventStore>
) =>
  Effect.gen(function* () {
    const bar = yield* progressBar(!yes && Option.isSome(targets.category), label, targets.ids.length)
    const results: Array<readonly [string, Result<A, E>]> = []
    yield* bar.tick(0)
    for (const id of targets.ids) {
      const result = yield* f(id).pipe(
        Effect.map((value): Result<A, E> => Either.right(value)),
        Effect.catchAll((error) => (isStoreError(error) ? Effect.fail(error) : Effect.succeed(Either.left(error))))
      )
      results.push([id, result])
      yield* bar.tick(results.length)
    }
    yield* bar.finish
    return results
  })

/**
 * A dry run of archive, unarchive or delete: the stream read without a lock. Each only
 * refuses a missing stream, or (archive, unarchive) a deleted one; deleting a deleted stream
 * changes nothing.
 */
const lifecycleDryRun = (name: Lifecycle) => (streamId: string) =>
  Effect.flatMap(EventStore.streamExtent(streamId), (extent): Effect.Effect<void, StreamNotFound | StreamDeleted> =>
    Option.isNone(extent)
      ? Effect.fail(new StreamNotFound({ streamId }))
      : extent.value.deleted && name !== "delete"
        ? Effect.fail(new StreamDeleted({ streamId, tombstoneVersion: extent.value.version }))
        : Effect.void
  )

/** Prints each stream's line (only for streams named, or every refusal), then fails if any was refused. */
const report = <A, E extends { readonly message: string }>(
  targets: Targets,
  results: ReadonlyArray<readonly [string, Result<A, E>]>,
  line: (streamId: string, value: A) => string
) =>
  Effect.gen(function* () {
    let refused = 0
    for (const [id, result] of results) {
      if (Either.isLeft(result)) {
        refused++
        yield* Console.error(`mire: ${id}: ${result.left.message}`)
      } else if (Option.isNone(targets.category)) {
        yield* Console.log(line(id, result.right))
      }
    }
    return refused
  })

const finish = (refused: number, of: number) =>
  refused === 0 ? Effect.void : Effect.fail(new Refused({ message: `${refused} of ${of} streams refused (see above)` }))

type Lifecycle = "archive" | "unarchive" | "delete"

const lifecycleText: Record<Lifecycle, { readonly past: string; readonly warning: string; readonly description: string }> = {
  archive: {
    past: "archived",
    warning: "Appends to them will fail until they are unarchived.",
    description:
      "Archive streams: read-only, left out of load and readCategory unless asked (readStream and subscriptions still read them)."
  },
  unarchive: {
    past: "unarchived",
    warning: "They take appends again.",
    description: "Unarchive streams: live again (a live stream is left as it is)."
  },
  delete: {
    past: "deleted",
    warning: "Their events and snapshots are removed for good, a tombstone keeps their ids taken; this cannot be undone.",
    description:
      "Delete streams for good (data protection): events and snapshots removed, a $StreamDeleted tombstone left so the id cannot be reused."
  }
}

const lifecycleOperation = (name: Lifecycle) => (streamId: string) =>
  name === "archive"
    ? EventStore.archive(streamId)
    : name === "unarchive"
      ? EventStore.unarchive(streamId)
      : EventStore.deleteStream(streamId)

const lifecycleCommand = (name: Lifecycle) => {
  const text = lifecycleText[name]
  return Command.make(name, options, (o) =>
    Effect.flatMap(Terminal.Terminal, (terminal) =>
      withDatabase(o)(
        Effect.gen(function* () {
          const targets = yield* targetsOf(o.streams, o.category)
          if (targets.ids.length === 0) return yield* Console.log(`no streams to ${name}`)
          const operation = lifecycleOperation(name)
          if (!o.dryRun) {
            const verb = name[0]!.toUpperCase() + name.slice(1)
            yield* confirm(o.yes, `${verb} ${describeTargets(targets)}? ${text.warning}`, terminal)
          }
          const dryRun = lifecycleDryRun(name)
          const results = yield* eachTarget(targets, name, o.yes, (id) => (o.dryRun ? dryRun(id) : operation(id)))
          const refused = yield* report(targets, results, (id) => `${o.dryRun ? `would have ${text.past}` : text.past} ${id}`)
          const done = results.length - refused
          yield* Console.log(
            `${o.dryRun ? "dry run: would have " : ""}${text.past} ${done} of ${results.length} stream${results.length === 1 ? "" : "s"}${o.dryRun ? "; nothing changed" : ""}`
          )
          return yield* finish(refused, results.length)
        }).pipe(Effect.provide(PgEventStore.layer))
      )
    )
  ).pipe(Command.withDescription(text.description))
}

/** `--max-age`: a duration as Effect reads one (`30 days`, `12 hours`, `90 minutes`). */
const parseAge = (text: string) =>
  Option.match(Duration.decodeUnknown(text), {
    onNone: () =>
      Effect.fail(new Refused({ message: `--max-age ${JSON.stringify(text)} is not a duration (for example "30 days", "12 hours")` })),
    onSome: Effect.succeed
  })

const describePolicy = (policy: Retention.Policy): string =>
  [
    policy.maxAge === undefined ? undefined : `max age ${Duration.format(Duration.decode(policy.maxAge))}`,
    policy.maxCount === undefined ? undefined : `max count ${policy.maxCount}`
  ]
    .filter((part) => part !== undefined)
    .join(", ")

/** The summary of a retention run. */
export const retentionSummary = (report: Retention.Report): string => {
  const would = report.dryRun ? "would have " : ""
  const lines = [
    `${report.dryRun ? "dry run: " : ""}retention ${would}truncated ${report.truncated} of ${report.streams} streams, removing ${report.eventsRemoved} events` +
      (report.limitedBySnapshot > 0 ? ` (${report.limitedBySnapshot} stopped at their newest snapshot)` : "") +
      (report.limitedByDeadLetters > 0 ? ` (${report.limitedByDeadLetters} stopped at a dead letter: retry or discard it)` : "") +
      (report.dryRun ? "; nothing changed" : "")
  ]
  if (report.skippedNoSnapshot > 0) {
    const more = report.skippedNoSnapshot - report.skippedSample.length
    lines.push(
      `${report.skippedNoSnapshot} skipped, no snapshot past their base to truncate to: ${report.skippedSample.join(", ")}${more > 0 ? `, … ${more} more` : ""}`
    )
  }
  return lines.join("\n")
}

const truncate = Command.make(
  "truncate",
  {
    ...options,
    before: Options.integer("before").pipe(
      Options.withDescription("remove the versions below this one (needs a snapshot at this version or later)"),
      Options.optional
    ),
    snapshotVersion: Options.integer("snapshot-version").pipe(
      Options.withDescription(
        "required: the snapshot version your aggregate loads from (its `snapshot.version`); a stored snapshot of another version is no base to truncate to"
      )
    ),
    maxAge: Options.text("max-age").pipe(
      Options.withDescription('retention: remove events recorded longer ago than this ("30 days"), up to the newest snapshot'),
      Options.optional
    ),
    maxCount: Options.integer("max-count").pipe(
      Options.withDescription("retention: keep the newest this many events (and everything from the newest snapshot)"),
      Options.optional
    )
  },
  (o) =>
    Effect.flatMap(Terminal.Terminal, (terminal) =>
      withDatabase(o)(
        Effect.gen(function* () {
          const retention = Option.isSome(o.maxAge) || Option.isSome(o.maxCount)
          if (retention === Option.isSome(o.before)) {
            return yield* new Refused({ message: "give --before <version>, or a retention policy (--max-age and/or --max-count)" })
          }
          const maxAge = Option.isSome(o.maxAge) ? yield* parseAge(o.maxAge.value) : undefined
          const policy: Retention.Policy = { maxAge, maxCount: Option.getOrUndefined(o.maxCount) }
          if (retention) {
            const checked = Retention.validate(policy)
            if (Either.isLeft(checked)) return yield* checked.left
          }
          const targets = yield* targetsOf(o.streams, o.category)
          if (targets.ids.length === 0) return yield* Console.log("no streams to truncate")
          if (Option.isSome(o.before)) {
            const before = o.before.value
            if (before < 1) return yield* new Refused({ message: `--before ${before} is not a version (1 or more)` })
            if (!o.dryRun) {
              yield* confirm(o.yes, `Truncate ${describeTargets(targets)} before v${before}? The events below v${before} are removed for good.`, terminal)
            }
            const results = yield* eachTarget(targets, "truncate", o.yes, (id) =>
              EventStore.truncate(id, before, { snapshotVersion: o.snapshotVersion, dryRun: o.dryRun })
            )
            const refused = yield* report(targets, results, (id, cut) =>
              cut.removed === 0
                ? `${id}: already truncated before v${cut.truncatedBefore}; nothing to remove`
                : `${o.dryRun ? "would have truncated" : "truncated"} ${id} before v${cut.truncatedBefore}: ${cut.removed} events ${o.dryRun ? "would be " : ""}removed`
            )
            let removed = 0
            for (const [, result] of results) if (Either.isRight(result)) removed += result.right.removed
            yield* Console.log(
              `${o.dryRun ? "dry run: would have " : ""}truncated ${results.length - refused} of ${results.length} streams before v${before}, removing ${removed} events${o.dryRun ? "; nothing changed" : ""}`
            )
            return yield* finish(refused, results.length)
          }
          if (!o.dryRun) {
            yield* confirm(
              o.yes,
              `Apply retention (${describePolicy(policy)}) to ${describeTargets(targets)}? Events it removes are gone for good (never past a stream's newest snapshot).`,
              terminal
            )
          }
          const results = yield* eachTarget(targets, "retention", o.yes, (id) => EventStore.retain(id, policy, { snapshotVersion: o.snapshotVersion, dryRun: o.dryRun })
          )
          const refused = yield* report(targets, results, (id, outcome) =>
            outcome.decision._tag === "Truncate"
              ? `${o.dryRun ? "would have truncated" : "truncated"} ${id} before v${outcome.decision.before}: ${outcome.removed} events ${o.dryRun ? "would be " : ""}removed`
              : outcome.decision._tag === "NoSnapshot"
                ? `${id}: skipped, no snapshot of version ${o.snapshotVersion} past its base (the policy would keep from v${outcome.decision.wanted})`
                : outcome.decision._tag === "DeadLettered"
                  ? `${id}: skipped, a dead letter at v${outcome.decision.deadLetterFrom} (retry or discard it first)`
                  : `${id}: nothing to remove`
          )
          let summary = Retention.emptyReport(o.dryRun)
          for (const [, result] of results) if (Either.isRight(result)) summary = Retention.record(summary, result.right)
          yield* Console.log(retentionSummary(summary))
          return yield* finish(refused, results.length)
        }).pipe(Effect.provide(PgEventStore.layer))
      )
    )
).pipe(
  Command.withDescription(
    "Truncate streams: remove their events below --before <version>, or apply a retention policy (--max-age, --max-count). Never past a stream's newest snapshot of --snapshot-version (your aggregate's snapshot.version), which becomes its base (loadSnapshotted still loads it), nor past a dead letter."
  )
)

/**
 * `mire stream`: archive, unarchive, delete and truncate streams.
 */
export const stream = Command.make("stream", {}, () =>
  missing("stream archive, unarchive, delete or truncate", "mire stream")
).pipe(
  Command.withDescription("A stream's lifecycle: archive, unarchive, delete, truncate (named streams, or --category)."),
  Command.withSubcommands([lifecycleCommand("archive"), lifecycleCommand("unarchive"), lifecycleCommand("delete"), truncate])
)
