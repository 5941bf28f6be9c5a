/**
 * `--schema` (and `MIRE_SCHEMA`): every command works in the schema it is
 * given; a name mire does not accept fails before connecting and creates
 * nothing.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Duration from "effect/Duration"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as LeaseStore from "@mire/core/LeaseStore"
import * as PgSchema from "@mire/pg/PgSchema"
import * as PgStore from "@mire/pg/PgStore"
import * as ConfigProvider from "effect/ConfigProvider"
import type * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { clientLayer, database, TestDatabase } from "../../pg/test/utils.js"
import * as Cli from "../src/Cli.js"

/** Runs `mire ...args` in-process; what it printed, and its exit. */
const mire = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const stdout: Array<string> = []
    const stderr: Array<string> = []
    const console = yield* Effect.map(
      Effect.console,
      (console): Console.Console => ({
        ...console,
        log: (...a: ReadonlyArray<unknown>) => Effect.sync(() => void stdout.push(a.join(" "))),
        error: (...a: ReadonlyArray<unknown>) => Effect.sync(() => void stderr.push(a.join(" ")))
      })
    )
    const exit = yield* Cli.run(["node", "mire", ...args]).pipe(
      Effect.withConsole(console),
      Effect.provide(NodeContext.layer),
      Effect.exit
    )
    return { exit, stdout: stdout.join("\n"), stderr: stderr.join("\n") }
  })

const schemas = Effect.flatMap(PgClient.PgClient, (sql) =>
  sql<{ name: string }>`SELECT nspname AS name FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' ORDER BY 1`
).pipe(Effect.map((rows) => rows.map((row) => row.name)))

describe("mire --schema", () => {
  layer(clientLayer().pipe(Layer.provideMerge(database)), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.effect("migrate and status work in the schema given; status --schema b shows only b's subscriptions", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* PgClient.PgClient
        const a = yield* mire(["migrate", "--schema", "cli_a", "--url", url])
        assert.isTrue(Exit.isSuccess(a.exit), a.stderr)
        assert.strictEqual(a.stdout.split("\n")[0], "applied 0001_events")
        // MIRE_SCHEMA when --schema is not given.
        const b = yield* mire(["migrate", "--url", url]).pipe(
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["MIRE_SCHEMA", "cli_b"]])))
        )
        assert.isTrue(Exit.isSuccess(b.exit), b.stderr)
        assert.strictEqual(a.stdout, b.stdout)
        const [present] = yield* sql<{ a: boolean; b: boolean; pub: boolean }>`
          SELECT to_regclass('cli_a.es_events') IS NOT NULL AS a, to_regclass('cli_b.es_events') IS NOT NULL AS b,
                 to_regclass('public.es_events') IS NOT NULL AS pub`
        assert.deepStrictEqual(present, { a: true, b: true, pub: false })
        const again = yield* mire(["migrate", "--schema", "cli_b", "--url", url])
        assert.strictEqual(again.stdout, "up to date: no pending migrations")

        for (const [schema, subscriptionId] of [["cli_a", "only-a"], ["cli_b", "only-b"]] as const) {
          yield* Effect.gen(function* () {
            yield* EventStore.append(`${subscriptionId}-1`, "clischema", ExpectedVersion.NoStream, [
              { eventType: "CliSchema.Happened", schemaVersion: 1, data: {} }
            ])
            yield* Effect.flatMap(LeaseStore.LeaseStore, (s) => s.acquire(subscriptionId, `worker-${schema}`, Duration.minutes(1)))
          }).pipe(Effect.provide(PgStore.layerSchema(schema)))
        }
        const status = yield* mire(["status", "--schema", "cli_b", "--json", "--url", url])
        assert.isTrue(Exit.isSuccess(status.exit), status.stderr)
        const json: { subscriptions: ReadonlyArray<{ subscriptionId: string; leaseHolder: string }> } = JSON.parse(status.stdout)
        assert.deepStrictEqual(
          json.subscriptions.map((s) => [s.subscriptionId, s.leaseHolder]),
          [["only-b", "worker-cli_b"]]
        )
        // The default schema, public, is not migrated here.
        const pub = yield* mire(["status", "--url", url])
        assert.isTrue(Exit.isFailure(pub.exit))
        assert.include(pub.stderr, "mire's schema is not installed")
      }))

    it.effect("a schema name mire does not accept: one line, a failed exit, nothing created", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const before = yield* schemas
        for (const bad of ['x"; DROP SCHEMA public CASCADE; --', "Tenant", "9lives"]) {
          const run = yield* mire(["migrate", "--schema", bad, "--url", url])
          assert.isTrue(Exit.isFailure(run.exit))
          assert.match(run.stderr, /^mire: invalid schema: /)
          assert.notInclude(run.stderr, "\n")
        }
        const env = yield* mire(["status", "--url", url]).pipe(
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["MIRE_SCHEMA", "Bad Name"]])))
        )
        assert.isTrue(Exit.isFailure(env.exit))
        assert.match(env.stderr, /^mire: invalid schema: /)
        assert.deepStrictEqual(yield* schemas, before)
        assert.isTrue(PgSchema.pattern.test("cli_a"))
      }))
  })

  layer(NodeContext.layer, { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.effect("every command's --help lists --schema", () =>
      Effect.gen(function* () {
        for (const command of [["migrate"], ["status"], ["tail"], ["stream", "delete"], ["stream", "truncate"]]) {
          const help = yield* mire([...command, "--help"])
          assert.isTrue(Exit.isSuccess(help.exit))
          assert.include(help.stdout, "--schema")
          assert.include(help.stdout, "MIRE_SCHEMA")
        }
      }))
  })
})
