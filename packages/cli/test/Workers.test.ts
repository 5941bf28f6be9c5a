/**
 * `mire status` shows every projection runner with the shards it leads
 * (issue 15), as a table and as JSON.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Projection from "@mire/core/Projection"
import * as ProjectionRunner from "@mire/core/ProjectionRunner"
import * as PgStore from "@mire/pg/PgStore"
import type * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import { migratedLayer, TestDatabase } from "../../pg/test/utils.js"
import * as Cli from "../src/Cli.js"

/** Runs `mire ...args` in-process; what it printed on stdout. */
const mire = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const lines: Array<string> = []
    const base = yield* Effect.console
    const console: Console.Console = { ...base, log: (...xs) => Effect.sync(() => void lines.push(xs.join(" "))) }
    const exit = yield* Cli.run(["node", "mire", ...args]).pipe(Effect.withConsole(console), Effect.provide(NodeContext.layer), Effect.exit)
    assert.isTrue(Exit.isSuccess(exit))
    return lines.join("\n")
  })

describe("mire status: workers", () => {
  layer(PgStore.layer.pipe(Layer.provideMerge(migratedLayer())), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.scoped("two runners of a 4-shard projection: each listed with the 2 shards it leads", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const projection = Projection.atLeastOnce({ subscriptionId: "totals", categories: ["order"], partitions: 4, handle: () => Effect.void })
        const options = { pollInterval: "50 millis", leaseRecheckInterval: "100 millis", leaseTtl: "3 seconds" } as const
        yield* ProjectionRunner.run([projection], { ...options, workerId: "replica-a" })
        yield* ProjectionRunner.run([projection], { ...options, workerId: "replica-b" })
        const json = yield* mire(["status", "--json", "--url", url]).pipe(
          Effect.map((text) => JSON.parse(text) as { workers: ReadonlyArray<{ workerId: string; leads: ReadonlyArray<string> }> }),
          Effect.filterOrFail((s) => s.workers.length === 2 && s.workers.every((w) => w.leads.length === 2)),
          Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("30 seconds"))),
          Effect.orDie
        )
        assert.deepStrictEqual(
          json.workers.map((w) => w.workerId),
          ["replica-a", "replica-b"]
        )
        assert.deepStrictEqual(
          json.workers.flatMap((w) => w.leads).sort(),
          ["totals#0of4", "totals#1of4", "totals#2of4", "totals#3of4"]
        )
        const table = yield* mire(["status", "--url", url])
        assert.match(table, /^WORKER\s+HEARTBEAT\s+LEADS$/m)
        assert.match(table, /^replica-a\s+[\d.]+ (ms|s) ago\s+2: totals#\dof4 totals#\dof4$/m)
        assert.match(table, /^replica-b\s+[\d.]+ (ms|s) ago\s+2: totals#\dof4 totals#\dof4$/m)
      }))
  })
})
