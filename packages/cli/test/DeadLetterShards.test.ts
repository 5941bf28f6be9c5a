/**
 * `mire dead-letters … <projection>` / `--all <projection>` of a partitioned
 * projection: they cover its shards (`<id>#<k>of<K>`), run in-process
 * against a real PostgreSQL database.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as DeadLetters from "@mire/core/DeadLetters"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import type * as Lease from "@mire/core/Lease"
import * as LeaseStore from "@mire/core/LeaseStore"
import * as PgStore from "@mire/pg/PgStore"
import * as Chunk from "effect/Chunk"
import type * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { migratedLayer, TestDatabase } from "../../pg/test/utils.js"
import * as Cli from "../src/Cli.js"

/** Runs `mire ...args` in-process to the end. */
const mire = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const stdout: Array<string> = []
    const stderr: Array<string> = []
    const console: Console.Console = yield* Effect.map(Effect.console, (c) => ({
      ...c,
      log: (...a: ReadonlyArray<unknown>) => Effect.sync(() => void stdout.push(a.join(" "))),
      error: (...a: ReadonlyArray<unknown>) => Effect.sync(() => void stderr.push(a.join(" ")))
    }))
    const exit = yield* Cli.run(["node", "mire", ...args]).pipe(Effect.withConsole(console), Effect.provide(NodeContext.layer), Effect.exit)
    return { exit, stdout: stdout.join("\n"), stderr: stderr.join("\n") }
  })

const JsonLetters = Schema.decodeUnknownSync(Schema.parseJson(Schema.Array(DeadLetters.DeadLetter)))

describe("mire dead-letters: a partitioned projection's shards", () => {
  layer(PgStore.layer.pipe(Layer.provideMerge(migratedLayer())), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.effect("list, retry --all and discard --all of a projection's id cover its shards, and only them", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const store = yield* DeadLetters.DeadLetterStore
        const leases = yield* LeaseStore.LeaseStore
        yield* EventStore.append("tally-a", "tally", ExpectedVersion.NoStream, [{ eventType: "Counted", schemaVersion: 1, data: {} }])
        const [event] = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readCategory("tally")))
        // One failed dead letter in each of: two shards of `totals`, an id that is not a shard, another projection.
        for (const id of ["totals#0of2", "totals#1of2", "totals#2of2", "totalsx"]) {
          const lease = Option.getOrThrow(yield* leases.acquire(id, "w", Duration.seconds(30)))
          const fence: Lease.Fence = { workerId: "w", fenceToken: lease.fenceToken }
          yield* store.fenced(id, fence, store.record(id, [DeadLetters.failed(event!, "boom", 1)]))
          yield* leases.release(id, fence)
        }
        const listed = yield* mire(["dead-letters", "list", "totals", "--json", "--url", url])
        assert.isTrue(Exit.isSuccess(listed.exit), listed.stderr)
        assert.deepStrictEqual(
          JsonLetters(listed.stdout).map((l) => l.subscriptionId),
          ["totals#0of2", "totals#1of2"]
        )
        const retried = yield* mire(["dead-letters", "retry", "--all", "totals", "--url", url])
        assert.isTrue(Exit.isSuccess(retried.exit), retried.stderr)
        assert.match(retried.stdout, /^marked 2 dead letter\(s\) for retry/)
        const discarded = yield* mire(["dead-letters", "discard", "--all", "totals", "--url", url])
        assert.match(discarded.stdout, /^discarded 2 dead letter\(s\)/)
        const left = yield* mire(["dead-letters", "list", "--json", "--url", url])
        assert.deepStrictEqual(
          JsonLetters(left.stdout).map((l) => [l.subscriptionId, l.status]),
          [
            ["totals#2of2", "failed"],
            ["totalsx", "failed"]
          ]
        )
        const help = yield* mire(["dead-letters", "retry", "--help"])
        assert.include(help.stdout, "<id>#<k>of<K>")
      }))
  })
})
