/**
 * `mire reset`, run in-process on argument arrays against a real
 * PostgreSQL database, asserting on what it prints and what it wrote.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { untilCommitSafe } from "@mire/core/conformance"
import * as Cursor from "@mire/core/Cursor"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as LeaseStore from "@mire/core/LeaseStore"
import * as Subscription from "@mire/core/Subscription"
import * as SubscriptionStore from "@mire/core/SubscriptionStore"
import * as PgLeaseStore from "@mire/pg/PgLeaseStore"
import * as PgSubscriptionStore from "@mire/pg/PgSubscriptionStore"
import type * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { storeLayer, TestDatabase } from "../../pg/test/utils.js"
import * as Cli from "../src/Cli.js"

/** Runs `mire ...args` to the end, capturing what it printed. */
const mire = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const stdout: Array<string> = []
    const stderr: Array<string> = []
    const console = yield* Effect.map(
      Effect.console,
      (console): Console.Console => ({
        ...console,
        log: (...parts: ReadonlyArray<unknown>) => Effect.sync(() => void stdout.push(parts.join(" "))),
        error: (...parts: ReadonlyArray<unknown>) => Effect.sync(() => void stderr.push(parts.join(" ")))
      })
    )
    const exit = yield* Cli.run(["node", "mire", ...args]).pipe(
      Effect.withConsole(console),
      Effect.provide(NodeContext.layer),
      Effect.exit
    )
    return { exit, stdout: stdout.join("\n"), stderr: stderr.join("\n") }
  })

const event = (i: number) => ({ eventType: "reset.happened", schemaVersion: 1, data: { i } })

const positionOf = (streamId: string, version: number) =>
  Effect.map(Stream.runHead(EventStore.readStream(streamId, { from: version, limit: 1 })), (e) => Option.getOrThrow(e))

describe("mire reset", () => {
  const setup = Layer.mergeAll(PgSubscriptionStore.layer, PgLeaseStore.layer).pipe(
    Layer.provideMerge(storeLayer()),
    Layer.provideMerge(NodeContext.layer)
  )
  layer(setup, { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.effect("--help describes --to and --force", () =>
      Effect.gen(function* () {
        const help = yield* mire(["reset", "--help"])
        assert.isTrue(Exit.isSuccess(help.exit), help.stderr)
        const text = `${help.stdout}\n${help.stderr}`
        assert.include(text, "--to")
        assert.include(text, "--force")
        assert.include(text, "ISO 8601 time")
        assert.include(text, "fences that worker out")
      }))

    it.scoped("moves a checkpoint to head, start, a position and a time; refused while leased unless --force", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const store = yield* SubscriptionStore.SubscriptionStore
        const leases = yield* LeaseStore.LeaseStore
        yield* EventStore.append("ledger-1", "ledger", ExpectedVersion.NoStream, [event(1), event(2), event(3)])
        // A subscription that has read everything and checkpointed (its row records its categories).
        const e3 = yield* positionOf("ledger-1", 3)
        // Below the commit-safe head (the server's oldest open transaction may be another test's).
        yield* untilCommitSafe
        const sub = yield* Subscription.make({ subscriptionId: "ledger-view", categories: ["ledger"] })
        assert.strictEqual((yield* sub.poll).length, 3)
        assert.isTrue(yield* sub.checkpoint())
        const read = () => Effect.map(store.readCheckpoint("ledger-view"), Option.getOrThrow)

        const start = yield* mire(["reset", "ledger-view", "--to", "start", "--url", url])
        assert.isTrue(Exit.isSuccess(start.exit), start.stderr)
        assert.strictEqual(start.stdout, "reset ledger-view to start: checkpoint 0:0, fence token 1")
        assert.isTrue(Cursor.isZero((yield* read()).cursor))

        const head = yield* mire(["reset", "ledger-view", "--to", "head", "--url", url])
        assert.isTrue(Exit.isSuccess(head.exit), head.stderr)
        assert.strictEqual(head.stdout, `reset ledger-view to head: checkpoint ${e3.transactionId}:${e3.globalPosition}, fence token 2`)

        const e2 = yield* positionOf("ledger-1", 2)
        const position = yield* mire(["reset", "ledger-view", "--to", `${e2.globalPosition}`, "--url", url])
        assert.isTrue(Exit.isSuccess(position.exit), position.stderr)
        assert.deepStrictEqual((yield* read()).cursor, { transactionId: e2.transactionId, position: e2.globalPosition - 1n })

        const time = yield* mire(["reset", "ledger-view", "--to", "2020-01-01T00:00:00Z", "--url", url])
        assert.isTrue(Exit.isSuccess(time.exit), time.stderr)
        assert.strictEqual((yield* read()).cursor.position, (yield* positionOf("ledger-1", 1)).globalPosition - 1n)

        // A live lease refuses the reset; --force fences its holder out.
        const lease = Option.getOrThrow(yield* leases.acquire("ledger-view", "worker-a", Duration.seconds(60)))
        const before = yield* read()
        const refused = yield* mire(["reset", "ledger-view", "--to", "head", "--url", url])
        assert.isTrue(Exit.isFailure(refused.exit))
        assert.match(refused.stderr, /^mire: ledger-view is leased by worker-a \(fence \d+\) until .*: stop it, or reset with force/)
        assert.deepStrictEqual(yield* read(), before)

        const forced = yield* mire(["reset", "ledger-view", "--to", "head", "--force", "--url", url])
        assert.isTrue(Exit.isSuccess(forced.exit), forced.stderr)
        assert.include(forced.stdout, `fence token ${lease.fenceToken + 1n}`)
        assert.include(
          forced.stdout,
          `fenced out worker-a (fence token ${lease.fenceToken}): its next checkpoint is refused and it returns to standby`
        )
        assert.isFalse(yield* sub.checkpoint({ workerId: "worker-a", fenceToken: lease.fenceToken }))
      }))

    it.effect("an unknown subscription, or a --to that is not a start, fails with one line and writes nothing", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const unknown = yield* mire(["reset", "no-such-subscription", "--to", "start", "--url", url])
        assert.isTrue(Exit.isFailure(unknown.exit))
        assert.include(unknown.stderr, "no subscription no-such-subscription")
        for (const to of ["yesterday", "-1", "0", "2026-13-01"]) {
          const bad = yield* mire(["reset", "ledger-view", "--to", to, "--url", url])
          assert.isTrue(Exit.isFailure(bad.exit), to)
          assert.strictEqual(bad.stderr.split("\n").length, 1, bad.stderr)
        }
      }))
  })
})
