/**
 * `mire stream archive|unarchive|delete|truncate`, run in-process against a
 * real PostgreSQL database, with a terminal of the test's own (a TTY that
 * answers the confirmation, or none) and a progress sink that records what
 * the bar draws.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Terminal from "@effect/platform/Terminal"
import * as SqlClient from "@effect/sql/SqlClient"
import * as AggregateRoot from "@mire/core/AggregateRoot"
import { account, Deposited, Opened, unique } from "@mire/core/conformance"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Chunk from "effect/Chunk"
import type * as Console from "effect/Console"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Mailbox from "effect/Mailbox"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { storeLayer, TestDatabase } from "../../pg/test/utils.js"
import * as Cli from "../src/Cli.js"
import { ProgressOutput } from "../src/internal/stream.js"

interface Run {
  readonly exit: Exit.Exit<void, unknown>
  readonly stdout: string
  readonly stderr: string
  /** What the confirmation prompt showed. */
  readonly prompted: string
  /** What the progress bar drew. */
  readonly progress: ReadonlyArray<string>
}

/**
 * A terminal: a TTY that answers the prompt with `answer` (a key press), or,
 * without an answer, no TTY at all.
 */
const terminalOf = (answer: string | undefined, shown: Array<string>): Terminal.Terminal => ({
  columns: Effect.succeed(100),
  rows: Effect.succeed(40),
  isTTY: Effect.succeed(answer !== undefined),
  readInput: Effect.gen(function* () {
    const input = yield* Mailbox.make<Terminal.UserInput>()
    if (answer !== undefined) {
      yield* input.offer({ input: Option.some(answer), key: { name: answer, ctrl: false, meta: false, shift: false } })
    }
    return input
  }),
  readLine: Effect.succeed(answer ?? ""),
  display: (text) => Effect.sync(() => void shown.push(text))
})

/** Runs `mire ...args`; `answer` is the key the terminal user presses (none: not a terminal). */
const mire = (args: ReadonlyArray<string>, options: { readonly answer?: string; readonly progressTTY?: boolean } = {}) =>
  Effect.gen(function* () {
    const stdout: Array<string> = []
    const stderr: Array<string> = []
    const shown: Array<string> = []
    const progress: Array<string> = []
    const console: Console.Console = {
      ...(yield* Effect.console),
      log: (...items: ReadonlyArray<unknown>) => Effect.sync(() => void stdout.push(items.join(" "))),
      error: (...items: ReadonlyArray<unknown>) => Effect.sync(() => void stderr.push(items.join(" ")))
    }
    const exit = yield* Cli.run(["node", "mire", ...args]).pipe(
      Effect.withConsole(console),
      Effect.provideService(ProgressOutput, {
        isTTY: options.progressTTY === true,
        write: (text) => Effect.sync(() => void progress.push(text))
      }),
      Effect.provideService(Terminal.Terminal, terminalOf(options.answer, shown)),
      Effect.provide(NodeContext.layer),
      Effect.exit
    )
    return { exit, stdout: stdout.join("\n"), stderr: stderr.join("\n"), prompted: shown.join(""), progress } satisfies Run
  })

/** A stream of `Account` at `version`, with a snapshot at `snapshotAt` (0: none). */
const streamWith = (Account: ReturnType<typeof account>, id: string, snapshotAt: number, version: number) =>
  Effect.gen(function* () {
    let root = AggregateRoot.record(AggregateRoot.make(Account, id), Opened.make({ owner: id }))
    if (snapshotAt > 0) {
      for (let i = 1; i < snapshotAt; i++) root = AggregateRoot.record(root, Deposited.make({ amount: 1 }))
      root = yield* EventStore.saveSnapshotting(root)
    } else root = yield* EventStore.save(root)
    while (root.version < version) root = yield* EventStore.save(AggregateRoot.record(root, Deposited.make({ amount: 1 })))
  })

const versions = (streamId: string) =>
  Effect.map(Stream.runCollect(EventStore.readStream(streamId)), (events) =>
    Chunk.toReadonlyArray(events).map((e) => e.streamVersion)
  )

const append = (streamId: string, category: string) =>
  EventStore.append(streamId, category, ExpectedVersion.Any, [{ eventType: `${category}.deposited`, schemaVersion: 1, data: { amount: 1 } }])

describe("mire stream", () => {
  layer(storeLayer().pipe(Layer.provideMerge(NodeContext.layer)), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.effect("--help documents every operation and option", () =>
      Effect.gen(function* () {
        const help = yield* mire(["stream", "--help"])
        assert.isTrue(Exit.isSuccess(help.exit))
        for (const word of ["archive", "unarchive", "delete", "truncate"]) assert.include(help.stdout, word)
        const truncate = yield* mire(["stream", "truncate", "--help"])
        for (const option of ["--before", "--max-age", "--max-count", "--snapshot-version", "--category", "--yes", "--dry-run", "--url"]) {
          assert.include(truncate.stdout, option)
        }
        assert.include(truncate.stdout, "newest snapshot")
        assert.include(truncate.stdout, "snapshot.version")
        const remove = yield* mire(["stream", "delete", "--help"])
        assert.include(remove.stdout, "tombstone")
      }))

    it.effect("archive, unarchive and delete named streams with --yes; a refused stream is named and the rest go on", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const category = unique("cli")
        yield* append(`${category}-1`, category)
        yield* append(`${category}-2`, category)

        const archived = yield* mire(["stream", "archive", `${category}-1`, `${category}-2`, "--yes", "--url", url])
        assert.isTrue(Exit.isSuccess(archived.exit), archived.stderr)
        assert.strictEqual(archived.stdout, `archived ${category}-1\narchived ${category}-2\narchived 2 of 2 streams`)
        const refused = yield* Effect.flip(append(`${category}-1`, category))
        assert.strictEqual(refused._tag, "StreamArchived")

        const unarchived = yield* mire(["stream", "unarchive", `${category}-1`, `${category}-nope`, "--yes", "--url", url])
        assert.isTrue(Exit.isFailure(unarchived.exit))
        assert.strictEqual(unarchived.stdout, `unarchived ${category}-1\nunarchived 1 of 2 streams`)
        assert.include(unarchived.stderr, `mire: ${category}-nope: stream ${category}-nope does not exist`)
        assert.include(unarchived.stderr, "mire: 1 of 2 streams refused (see above)")
        yield* append(`${category}-1`, category)

        const deleted = yield* mire(["stream", "delete", `${category}-1`, "--yes", "--url", url])
        assert.isTrue(Exit.isSuccess(deleted.exit), deleted.stderr)
        assert.strictEqual(deleted.stdout, `deleted ${category}-1\ndeleted 1 of 1 stream`)
        assert.strictEqual((yield* Effect.flip(append(`${category}-1`, category)))._tag, "StreamDeleted")
      }))

    it.effect("asks first: without a terminal it refuses unless --yes; a TTY answer of n changes nothing, y goes ahead", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const category = unique("ask")
        yield* append(`${category}-1`, category)

        const noTerminal = yield* mire(["stream", "delete", `${category}-1`, "--url", url])
        assert.isTrue(Exit.isFailure(noTerminal.exit))
        assert.strictEqual(noTerminal.stderr, "mire: stdin is not a terminal, so there is no one to ask: pass --yes to confirm")
        assert.deepStrictEqual(yield* versions(`${category}-1`), [1])

        const no = yield* mire(["stream", "delete", `${category}-1`, "--url", url], { answer: "n" })
        assert.isTrue(Exit.isFailure(no.exit))
        assert.include(no.prompted, `Delete 1 stream (${category}-1)? Their events and snapshots are removed for good`)
        assert.strictEqual(no.stderr, "mire: cancelled; nothing changed")
        assert.deepStrictEqual(yield* versions(`${category}-1`), [1])

        const yes = yield* mire(["stream", "archive", `${category}-1`, "--url", url], { answer: "y" })
        assert.isTrue(Exit.isSuccess(yes.exit), yes.stderr)
        assert.include(yes.prompted, `Archive 1 stream (${category}-1)?`)
        assert.strictEqual((yield* Effect.flip(append(`${category}-1`, category)))._tag, "StreamArchived")
      }))

    it.effect("--dry-run says what would happen and changes nothing (no question asked)", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const Account = account(unique("dry"), 5)
        yield* streamWith(Account, "1", 5, 7)
        const streamId = `${Account.category}-1`

        const del = yield* mire(["stream", "delete", streamId, "--dry-run", "--url", url])
        assert.isTrue(Exit.isSuccess(del.exit), del.stderr)
        assert.strictEqual(del.stdout, `would have deleted ${streamId}\ndry run: would have deleted 1 of 1 stream; nothing changed`)
        const cut = yield* mire(["stream", "truncate", "--snapshot-version", "1", streamId, "--before", "5", "--dry-run", "--url", url])
        assert.isTrue(Exit.isSuccess(cut.exit), cut.stderr)
        assert.include(cut.stdout, `would have truncated ${streamId} before v5: 4 events would be removed`)
        const policy = yield* mire(["stream", "truncate", "--snapshot-version", "1", "--category", Account.category, "--max-count", "1", "--dry-run", "--url", url])
        assert.isTrue(Exit.isSuccess(policy.exit), policy.stderr)
        assert.strictEqual(
          policy.stdout,
          "dry run: retention would have truncated 1 of 1 streams, removing 4 events (1 stopped at their newest snapshot); nothing changed"
        )
        assert.deepStrictEqual(yield* versions(streamId), [1, 2, 3, 4, 5, 6, 7])
      }))

    it.effect("--dry-run of delete and truncate --before takes no lock and writes nothing (a held row lock does not stop it)", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        const Account = account(unique("drylock"), 5)
        yield* streamWith(Account, "1", 5, 7)
        const streamId = `${Account.category}-1`
        // Another connection holds the stream's row lock (as an append or a truncation would) until released.
        const locked = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const holder = yield* sql
          .withTransaction(
            Effect.zipRight(
              sql`SELECT 1 FROM es_streams WHERE stream_id = ${streamId} FOR UPDATE`,
              Effect.zipRight(Deferred.succeed(locked, undefined), Deferred.await(release))
            )
          )
          .pipe(Effect.fork)
        yield* Deferred.await(locked)
        const before = yield* sql<{ n: string }>`SELECT coalesce(max(global_position), 0)::text AS n FROM es_events`
        // The real operations would wait for the lock: the dry runs answer at once.
        const del = yield* mire(["stream", "delete", streamId, "--dry-run", "--url", url]).pipe(Effect.timeout("20 seconds"))
        assert.isTrue(Exit.isSuccess(del.exit), del.stderr)
        assert.strictEqual(del.stdout, `would have deleted ${streamId}\ndry run: would have deleted 1 of 1 stream; nothing changed`)
        const cut = yield* mire(["stream", "truncate", streamId, "--before", "5", "--snapshot-version", "1", "--dry-run", "--url", url]).pipe(
          Effect.timeout("20 seconds")
        )
        assert.isTrue(Exit.isSuccess(cut.exit), cut.stderr)
        assert.include(cut.stdout, `would have truncated ${streamId} before v5: 4 events would be removed`)
        const refused = yield* mire(["stream", "truncate", streamId, "--before", "6", "--snapshot-version", "1", "--dry-run", "--url", url])
        assert.isTrue(Exit.isFailure(refused.exit))
        assert.include(refused.stderr, "that needs a snapshot at v6 or later (its snapshot is at v5)")
        const missing = yield* mire(["stream", "delete", `${streamId}-nope`, "--dry-run", "--url", url])
        assert.isTrue(Exit.isFailure(missing.exit))
        assert.include(missing.stderr, `stream ${streamId}-nope does not exist`)
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holder)
        // Nothing written: no event added (no tombstone), none removed.
        const after = yield* sql<{ n: string }>`SELECT coalesce(max(global_position), 0)::text AS n FROM es_events`
        assert.deepStrictEqual(after, before)
        assert.deepStrictEqual(yield* versions(streamId), [1, 2, 3, 4, 5, 6, 7])
      }))

    it.effect("--snapshot-version: a stored snapshot of another version is no base to truncate to", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const Account = account(unique("ver"), 5)
        yield* streamWith(Account, "1", 5, 7)
        const streamId = `${Account.category}-1`
        const run = yield* mire(["stream", "truncate", streamId, "--before", "5", "--snapshot-version", "2", "--yes", "--url", url])
        assert.isTrue(Exit.isFailure(run.exit))
        assert.include(run.stderr, "its snapshot at v5 is of snapshot version 1, not 2")
        const policy = yield* mire(["stream", "truncate", "--category", Account.category, "--max-count", "1", "--snapshot-version", "2", "--yes", "--url", url])
        assert.isTrue(Exit.isSuccess(policy.exit), policy.stderr)
        assert.include(policy.stdout, "removing 0 events")
        assert.deepStrictEqual(yield* versions(streamId), [1, 2, 3, 4, 5, 6, 7])
      }))

    it.effect("truncate --before: up to the snapshot; past it the stream is refused with the reason", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const Account = account(unique("cut"), 5)
        yield* streamWith(Account, "1", 5, 7)
        yield* streamWith(Account, "2", 0, 6)
        const [one, two] = [`${Account.category}-1`, `${Account.category}-2`]

        const run = yield* mire(["stream", "truncate", "--snapshot-version", "1", one, two, "--before", "5", "--yes", "--url", url])
        assert.isTrue(Exit.isFailure(run.exit))
        assert.strictEqual(
          run.stdout,
          `truncated ${one} before v5: 4 events removed\ntruncated 1 of 2 streams before v5, removing 4 events`
        )
        assert.include(run.stderr, `mire: ${two}: cannot truncate ${two} before v5: that needs a snapshot at v5 or later (it has none)`)
        assert.deepStrictEqual(yield* versions(one), [5, 6, 7])
        assert.deepStrictEqual(yield* versions(two), [1, 2, 3, 4, 5, 6])
        const state = Option.getOrThrow(yield* EventStore.loadSnapshotted(Account, "1"))
        assert.strictEqual(state.version, 7)
      }))

    it.effect("retention over a category: a progress bar on a terminal stderr, none with --yes; a summary either way", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const Account = account(unique("ret"), 4)
        for (const id of ["a", "b", "c"]) yield* streamWith(Account, id, 4, 6)
        yield* streamWith(Account, "d", 0, 6)

        const run = yield* mire(["stream", "truncate", "--snapshot-version", "1", "--category", Account.category, "--max-count", "2", "--url", url], {
          answer: "y",
          progressTTY: true
        })
        assert.isTrue(Exit.isSuccess(run.exit), run.stderr)
        assert.include(run.prompted, `Apply retention (max count 2) to all 4 streams of category ${Account.category}?`)
        assert.strictEqual(
          run.stdout,
          `retention truncated 3 of 4 streams, removing 9 events (3 stopped at their newest snapshot)\n1 skipped, no snapshot past their base to truncate to: ${Account.category}-d`
        )
        assert.isTrue(run.progress.length >= 3)
        assert.isTrue(run.progress.slice(0, -1).every((frame) => frame.startsWith("\rretention [")))
        assert.include(run.progress[run.progress.length - 2]!, "4/4 streams 100%")
        assert.strictEqual(run.progress[run.progress.length - 1], "\n")
        for (const id of ["a", "b", "c"]) assert.deepStrictEqual(yield* versions(`${Account.category}-${id}`), [4, 5, 6])

        const quiet = yield* mire(["stream", "truncate", "--snapshot-version", "1", "--category", Account.category, "--max-age", "0 millis", "--yes", "--url", url], {
          progressTTY: true
        })
        assert.isTrue(Exit.isSuccess(quiet.exit), quiet.stderr)
        assert.deepStrictEqual(quiet.progress, [])
        assert.include(quiet.stdout, "retention truncated 0 of 4 streams, removing 0 events")
      }))

    it.effect("bad input is refused before anything changes", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const category = unique("bad")
        yield* append(`${category}-1`, category)
        const cases: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
          [["stream", "archive", "--yes"], "mire: name the streams, or --category <category> for every stream of a category"],
          [["stream", "archive", `${category}-1`, "--category", category, "--yes"], "mire: give stream ids or --category, not both"],
          [["stream", "truncate", "--snapshot-version", "1", `${category}-1`, "--yes"], "mire: give --before <version>, or a retention policy (--max-age and/or --max-count)"],
          [["stream", "truncate", "--snapshot-version", "1", `${category}-1`, "--before", "2", "--max-count", "1", "--yes"], "mire: give --before <version>, or a retention policy (--max-age and/or --max-count)"],
          [["stream", "truncate", "--snapshot-version", "1", "--category", category, "--max-age", "soon", "--yes"], 'mire: --max-age "soon" is not a duration (for example "30 days", "12 hours")'],
          [["stream", "truncate", "--snapshot-version", "1", "--category", category, "--max-count", "0", "--yes"], "mire: invalid maxCount: 0 is not a positive integer"],
          [["stream", "truncate", "--snapshot-version", "1", `${category}-1`, "--before", "0", "--yes"], "mire: --before 0 is not a version (1 or more)"],
          [["stream", "truncate", `${category}-1`, "--before", "1", "--yes"], "--snapshot-version"]
        ]
        for (const [args, message] of cases) {
          const run = yield* mire([...args, "--url", url])
          assert.isTrue(Exit.isFailure(run.exit), args.join(" "))
          assert.include(run.stderr, message, args.join(" "))
        }
        assert.deepStrictEqual(yield* versions(`${category}-1`), [1])
      }))
  })
})
