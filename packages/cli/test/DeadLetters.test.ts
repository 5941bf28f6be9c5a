/**
 * `mire dead-letters list|retry|discard` and the dead letters in `mire
 * status`, run in-process against a real PostgreSQL database with a
 * projection that skips a poison event.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as DeadLetters from "@mire/core/DeadLetters"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Projection from "@mire/core/Projection"
import * as ProjectionRunner from "@mire/core/ProjectionRunner"
import * as PgStore from "@mire/pg/PgStore"
import type * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { migratedLayer, TestDatabase } from "../../pg/test/utils.js"
import * as Cli from "../src/Cli.js"

interface Output {
  readonly stdout: Array<string>
  readonly stderr: Array<string>
}

const capture = (output: Output): Effect.Effect<Console.Console> =>
  Effect.map(Effect.console, (console) => ({
    ...console,
    log: (...args: ReadonlyArray<unknown>) => Effect.sync(() => void output.stdout.push(args.join(" "))),
    error: (...args: ReadonlyArray<unknown>) => Effect.sync(() => void output.stderr.push(args.join(" ")))
  }))

/** Runs `mire ...args` in-process to the end. */
const mire = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const output: Output = { stdout: [], stderr: [] }
    const console = yield* capture(output)
    const exit = yield* Cli.run(["node", "mire", ...args]).pipe(
      Effect.withConsole(console),
      Effect.provide(NodeContext.layer),
      Effect.exit
    )
    return { exit, stdout: output.stdout.join("\n"), stderr: output.stderr.join("\n") }
  })

/** Retries `check` until it holds, for at most 30 s of real time. */
const eventually = <A>(check: Effect.Effect<A, unknown>) =>
  check.pipe(Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("30 seconds"))), Effect.orDie)

const ev = (mark: string) => ({ eventType: "Cli.Marked", schemaVersion: 1, data: { mark } })

/** `--json` output, decoded with the model's Schema (so bigints must be strings and times ISO 8601). */
const JsonLetters = Schema.decodeUnknownSync(Schema.parseJson(Schema.Array(DeadLetters.DeadLetter)))

describe("mire dead-letters", () => {
  layer(PgStore.layer.pipe(Layer.provideMerge(migratedLayer())), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.scoped("list, status, retry and discard the dead letters of a projection that skips", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const broken = new Set(["a2", "c1"])
        const handled: Array<string> = []
        yield* EventStore.append("ledger-a", "ledger", ExpectedVersion.NoStream, [ev("a1"), ev("a2"), ev("a3")])
        yield* EventStore.append("ledger-b", "ledger", ExpectedVersion.NoStream, [ev("b1")])
        yield* EventStore.append("ledger-c", "ledger", ExpectedVersion.NoStream, [ev("c1"), ev("c2")])
        const runner = yield* ProjectionRunner.run(
          [
            Projection.atLeastOnce({
              subscriptionId: "balances",
              categories: ["ledger"],
              onFailure: "skip",
              handle: ({ recorded }) =>
                Effect.suspend(() =>
                  broken.has(String(recorded.data.mark))
                    ? Effect.fail(`no rate for ${String(recorded.data.mark)}`)
                    : Effect.sync(() => void handled.push(String(recorded.data.mark)))
                )
            })
          ],
          { workerId: "cli-worker", pollInterval: "20 millis", retry: Schedule.spaced("1 millis"), maxAttempts: 2 }
        )
        yield* runner.whenCaughtUp("balances", "60 seconds")

        const table = yield* mire(["dead-letters", "list", "--url", url])
        assert.isTrue(Exit.isSuccess(table.exit), table.stderr)
        const lines = table.stdout.split("\n")
        assert.match(lines[0]!, /^ID\s+SUBSCRIPTION\s+STREAM\s+VERSION\s+POSITION\s+TYPE\s+STATUS\s+ATTEMPTS\s+LAST FAILED\s+ERROR$/)
        assert.match(lines[1]!, /^\d+\s+balances\s+ledger-a\s+v2\s+\d+\s+Cli\.Marked\s+failed\s+2\s+\S+Z\s+no rate for a2$/)
        assert.match(lines[2]!, /^\d+\s+balances\s+ledger-a\s+v3\s+\d+\s+Cli\.Marked\s+parked\s+0\s+\S+Z\s+parked: ledger-a has an earlier dead letter$/)
        assert.match(lines[3]!, /^\d+\s+balances\s+ledger-c\s+v1\s+\d+\s+Cli\.Marked\s+failed\s+2\s/)
        assert.match(lines[4]!, /^\d+\s+balances\s+ledger-c\s+v2\s+\d+\s+Cli\.Marked\s+parked\s+0\s/)
        assert.strictEqual(lines.at(-1), "balances: 2 failed, 0 to retry, 2 parked")

        const json = yield* mire(["dead-letters", "list", "balances", "--json", "--url", url])
        assert.isTrue(Exit.isSuccess(json.exit), json.stderr)
        const letters = JsonLetters(json.stdout)
        assert.deepStrictEqual(
          letters.map((l) => [l.streamId, l.streamVersion, l.status, l.attempts]),
          [
            ["ledger-a", 2, "failed", 2],
            ["ledger-a", 3, "parked", 0],
            ["ledger-c", 1, "failed", 2],
            ["ledger-c", 2, "parked", 0]
          ]
        )
        assert.match(json.stdout, /"id": "\d+"/)
        assert.isTrue(letters[0]!.globalPosition > 0n)
        assert.isTrue(letters[0]!.firstFailedAt.getTime() > 0)
        const none = yield* mire(["dead-letters", "list", "audit", "--url", url])
        assert.strictEqual(none.stdout, "no dead letters")

        const status = yield* mire(["status", "--url", url])
        assert.match(status.stdout, /^balances\s.*\sledger\s+0\s+4\s+ok$/m)
        const statusJson = JSON.parse((yield* mire(["status", "--json", "--url", url])).stdout)
        assert.strictEqual(statusJson.subscriptions[0].deadLetters, 4)

        // Bad selections change nothing.
        for (const args of [[], ["0"], ["x"], ["1", "--all", "balances"]]) {
          const bad = yield* mire(["dead-letters", "retry", ...args, "--url", url])
          assert.isTrue(Exit.isFailure(bad.exit), args.join(" "))
          assert.match(bad.stderr, /^mire: /)
        }

        // Fix a2 and retry its dead letter: it and the parked a3 are handled, in order.
        broken.delete("a2")
        const retried = yield* mire(["dead-letters", "retry", String(letters[0]!.id), "--url", url])
        assert.isTrue(Exit.isSuccess(retried.exit), retried.stderr)
        assert.match(retried.stdout, /^marked 1 dead letter\(s\) for retry/)
        yield* eventually(
          Effect.filterOrFail(
            Effect.map(mire(["dead-letters", "list", "balances", "--json", "--url", url]), (r) => JsonLetters(r.stdout)),
            (l: ReadonlyArray<DeadLetters.DeadLetter>) => l.length === 2
          )
        )
        assert.deepStrictEqual(
          handled.filter((m) => m.startsWith("a")),
          ["a1", "a2", "a3"]
        )

        // Discard all of the subscription's: c1 is dropped, the parked c2 is handled.
        const discarded = yield* mire(["dead-letters", "discard", "--all", "balances", "--url", url])
        assert.isTrue(Exit.isSuccess(discarded.exit), discarded.stderr)
        assert.match(discarded.stdout, /^discarded 2 dead letter\(s\)/)
        assert.strictEqual((yield* mire(["dead-letters", "list", "--url", url])).stdout, "no dead letters")
        assert.notInclude(handled, "c1")
      }))

    it.effect("--help for dead-letters and each of its commands; no subcommand is one line and a failed exit", () =>
      Effect.gen(function* () {
        for (const [name, option] of [
          ["list", "--json"],
          ["retry", "--all"],
          ["discard", "--all"]
        ] as const) {
          const help = yield* mire(["dead-letters", name, "--help"])
          assert.isTrue(Exit.isSuccess(help.exit))
          assert.include(help.stdout, option)
          assert.include(help.stdout, "--url")
        }
        const top = yield* mire(["dead-letters", "--help"])
        assert.include(top.stdout, "retry")
        const none = yield* mire(["dead-letters"])
        assert.isTrue(Exit.isFailure(none.exit))
        assert.strictEqual(none.stderr, "mire: missing command: dead-letters list, retry or discard (mire dead-letters --help lists them)")
      }))
  })
})
