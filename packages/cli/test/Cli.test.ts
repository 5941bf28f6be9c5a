/**
 * The `mire` commands, run in-process with `Command.run` on argument arrays
 * against real PostgreSQL databases, asserting on what they print; and the
 * built entry point run as a process for Ctrl-C and exit codes.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Projection from "@mire/core/Projection"
import * as ProjectionRunner from "@mire/core/ProjectionRunner"
import * as Subscription from "@mire/core/Subscription"
import * as Checkpoint from "@mire/core/Checkpoint"
import { untilCommitSafe } from "@mire/core/conformance"
import * as LeaseStore from "@mire/core/LeaseStore"
import * as SubscriptionStore from "@mire/core/SubscriptionStore"
import * as PgLeaseStore from "@mire/pg/PgLeaseStore"
import * as PgSubscriptionStore from "@mire/pg/PgSubscriptionStore"
import * as ConfigProvider from "effect/ConfigProvider"
import type * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import { spawn } from "node:child_process"
import { createServer } from "node:net"
import { fileURLToPath } from "node:url"
import { clientLayer, database, serverUrl, storeLayer, TestDatabase } from "../../pg/test/utils.js"
import * as Cli from "../src/Cli.js"

/** What a run printed, as it happens. */
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

/** Runs `mire ...args` in-process, writing into `output`. */
const mireInto = (output: Output, args: ReadonlyArray<string>) =>
  Effect.flatMap(capture(output), (console) =>
    Cli.run(["node", "mire", ...args]).pipe(Effect.withConsole(console), Effect.provide(NodeContext.layer), Effect.exit)
  )

/** Runs `mire ...args` to the end. */
const mire = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const output: Output = { stdout: [], stderr: [] }
    const exit = yield* mireInto(output, args)
    return { exit, stdout: output.stdout.join("\n"), stderr: output.stderr.join("\n") }
  })

/** Retries `check` until it holds, for at most `deadline` of real time. */
const eventually = <A>(check: Effect.Effect<A, unknown>, deadline: Duration.DurationInput = "30 seconds") =>
  check.pipe(
    Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo(deadline))),
    Effect.orDie
  )

const closedPort = Effect.promise(
  () =>
    new Promise<number>((resolve, reject) => {
      const server = createServer()
      server.on("error", reject)
      server.listen(0, "127.0.0.1", () => {
        const address = server.address()
        const port = typeof address === "object" && address !== null ? address.port : 0
        server.close(() => resolve(port))
      })
    })
)

const tables = Effect.flatMap(PgClient.PgClient, (sql) =>
  sql<{ name: string }>`SELECT tablename AS name FROM pg_tables WHERE tablename LIKE 'es\\_%' ORDER BY 1`
).pipe(Effect.map((rows) => rows.map((row) => row.name)))

const event = (i: number) => ({ eventType: "Cli.Happened", schemaVersion: 1, data: { i } })

describe("mire migrate", () => {
  layer(clientLayer().pipe(Layer.provideMerge(database)), { timeout: "120 seconds", excludeTestServices: true })(
    (it) => {
      it.effect("--dry-run prints the SQL of every pending migration and applies nothing", () =>
        Effect.gen(function* () {
          const { url } = yield* TestDatabase
          const unmigrated = yield* mire(["status", "--url", url])
          assert.isTrue(Exit.isFailure(unmigrated.exit))
          assert.strictEqual(
            unmigrated.stderr,
            'mire: head failed: mire\'s schema is not installed (relation "public.es_events" does not exist); run `mire migrate` or `PgMigrations.migrate()`'
          )
          const run = yield* mire(["migrate", "--dry-run", "--url", url])
          assert.isTrue(Exit.isSuccess(run.exit), run.stderr)
          assert.include(run.stdout, "-- mire migration 0001_events")
          assert.include(run.stdout, "CREATE TABLE es_events")
          assert.include(run.stdout, "-- mire migration 0003_subscriptions")
          assert.deepStrictEqual(yield* tables, [])
        })
      )

      it.effect("applies the pending migrations and says which; then it is up to date", () =>
        Effect.gen(function* () {
          const { url } = yield* TestDatabase
          const first = yield* mire(["migrate", "--url", url])
          assert.isTrue(Exit.isSuccess(first.exit), first.stderr)
          const applied = first.stdout.split("\n")
          assert.strictEqual(applied[0], "applied 0001_events")
          assert.isTrue(applied.every((line) => /^applied \d{4}_[a-z0-9_]+$/.test(line)))
          assert.includeMembers(yield* tables, ["es_events", "es_streams", "es_subscriptions"])
          const again = yield* mire(["migrate", "--url", url])
          assert.strictEqual(again.stdout, "up to date: no pending migrations")
          const dry = yield* mire(["migrate", "--dry-run", "--url", url])
          assert.strictEqual(dry.stdout, "-- up to date: no pending migrations")
        })
      )
    }
  )
})

describe("mire status and tail", () => {
  const setup = Layer.mergeAll(PgSubscriptionStore.layer, PgLeaseStore.layer).pipe(
    Layer.provideMerge(storeLayer()),
    Layer.provideMerge(NodeContext.layer)
  )
  layer(setup, { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.scoped("status lists two projections' subscriptions with lease holder, fence, checkpoint and lag; --json parses", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const leases = yield* LeaseStore.LeaseStore
        yield* EventStore.append("ledger-1", "ledger", ExpectedVersion.NoStream, [event(1), event(2), event(3)])
        yield* EventStore.append("ledger-2", "ledger", ExpectedVersion.NoStream, [event(4), event(5)])
        // Each projection reads its events in one poll: all five must be readable (another test's open
        // transaction holds the commit-safe head back).
        yield* untilCommitSafe
        // Two projections as a runner leaves them: a fenced lease each, a checkpoint written under it.
        const project = (subscriptionId: string, workerId: string, events: number) =>
          Effect.gen(function* () {
            const lease = yield* leases.acquire(subscriptionId, workerId, Duration.minutes(10))
            assert.isTrue(lease._tag === "Some")
            if (lease._tag !== "Some") return
            const subscription = yield* Subscription.make({ subscriptionId, categories: ["ledger"], batchSize: events })
            const delivered = yield* eventually(
              Effect.filterOrFail(subscription.poll, (page) => page.length === events)
            )
            assert.strictEqual(delivered.length, events)
            assert.isTrue(yield* subscription.checkpoint({ workerId, fenceToken: lease.value.fenceToken }))
          })
        yield* project("balances", "worker-a", 5)
        yield* project("audit", "worker-b", 2)

        const table = yield* mire(["status", "--url", url])
        assert.isTrue(Exit.isSuccess(table.exit), table.stderr)
        const lines = table.stdout.split("\n")
        assert.match(lines[0]!, /^log head \(commit-safe\): \d+:5$/)
        assert.match(lines[2]!, /^SUBSCRIPTION\s+LEASE HOLDER\s+FENCE\s+LEASED UNTIL\s+CHECKPOINT\s+CATEGORIES\s+LAG\s+DEAD LETTERS\s+STATE$/)
        assert.match(lines[3]!, /^audit\s+worker-b\s+1\s+\d{4}-\d\d-\d\dT[\d:.]+Z\s+\d+:2\s+ledger\s+3\s+0\s+ok$/)
        assert.match(lines[4]!, /^balances\s+worker-a\s+1\s+\d{4}-\d\d-\d\dT[\d:.]+Z\s+\d+:5\s+ledger\s+0\s+0\s+ok$/)
        assert.match(lines[6]!, /^oldest open transaction: /)

        const json = yield* mire(["status", "--json", "--url", url])
        assert.isTrue(Exit.isSuccess(json.exit), json.stderr)
        const parsed = JSON.parse(json.stdout)
        assert.strictEqual(parsed.head.position, "5")
        assert.deepStrictEqual(
          parsed.subscriptions.map((s: Record<string, unknown>) => [s.subscriptionId, s.leaseHolder, s.fenceToken, s.lag]),
          [
            ["audit", "worker-b", "1", "3"],
            ["balances", "worker-a", "1", "0"]
          ]
        )
        const balances = parsed.subscriptions[1]
        assert.strictEqual(balances.leaseActive, true)
        assert.strictEqual(balances.checkpoint.position, "5")
        assert.isString(balances.checkpoint.transactionId)
        assert.isTrue(Date.parse(balances.leasedUntil) > Date.now())
        assert.isTrue("oldestTransaction" in parsed)
      })
    )

    it.scoped("status shows the oldest open transaction holding the horizon", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* PgClient.PgClient
        const conn = yield* sql.reserve
        yield* conn.executeRaw("BEGIN", [])
        const [[pid, xid] = []] = yield* conn.executeValues(
          "SELECT pg_backend_pid(), pg_current_xact_id()::text /* mire-cli-test-holder */",
          []
        )
        const mine = { pid: Number(pid), xid: String(xid) }
        yield* Effect.addFinalizer(() => Effect.ignore(conn.executeRaw("ROLLBACK", [])))
        const run = yield* mire(["status", "--json", "--url", url])
        const oldest = JSON.parse(run.stdout).oldestTransaction
        // The horizon is server-wide: another test's transaction may be older than ours, never younger.
        assert.isTrue(BigInt(oldest.transactionId) <= BigInt(mine.xid))
        if (oldest.pid === mine.pid) {
          assert.include(oldest.query, "mire-cli-test-holder")
          assert.strictEqual(oldest.state, "idle in transaction")
          const table = yield* mire(["status", "--url", url])
          assert.match(table.stdout, /oldest open transaction: pid \d+, .*idle in transaction.*mire-cli-test-holder/)
        }
      })
    )

    it.scoped("tail prints the events appended after it starts, in commit-safe order, and leaves no row behind", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* PgClient.PgClient
        yield* EventStore.append("tail-0", "tailed", ExpectedVersion.NoStream, [event(0)])
        // tail starts at the commit-safe head: an event above it (another test's transaction open on the
        // server) is after the start, and would be printed.
        yield* untilCommitSafe
        const output: Output = { stdout: [], stderr: [] }
        const fiber = yield* Effect.fork(mireInto(output, ["tail", "tailed", "other", "--url", url]))
        yield* eventually(Effect.filterOrFail(Effect.sync(() => output.stderr.join("\n")), (s) => s.includes("following")))
        yield* EventStore.append("tail-1", "tailed", ExpectedVersion.NoStream, [event(1), event(2)])
        yield* EventStore.append("skip-1", "skipped", ExpectedVersion.NoStream, [event(99)])
        yield* EventStore.append("tail-2", "other", ExpectedVersion.NoStream, [event(3)])
        yield* EventStore.append("tail-1", "tailed", ExpectedVersion.Exact(2), [event(4)])
        yield* eventually(Effect.filterOrFail(Effect.sync(() => output.stdout.length), (n) => n >= 4))
        yield* Fiber.interrupt(fiber)
        const lines = output.stdout
        assert.strictEqual(lines.length, 4, lines.join("\n"))
        assert.deepStrictEqual(
          lines.map((line) => line.split(" ").slice(1).join(" ")),
          [
            'tail-1 v1 Cli.Happened {"i":1}',
            'tail-1 v2 Cli.Happened {"i":2}',
            'tail-2 v1 Cli.Happened {"i":3}',
            'tail-1 v3 Cli.Happened {"i":4}'
          ]
        )
        const positions = lines.map((line) => BigInt(line.split(" ")[0]!))
        assert.deepStrictEqual(positions, [...positions].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)))
        const rows = yield* sql`SELECT subscription_id FROM es_subscriptions WHERE subscription_id LIKE 'mire-tail%'`
        assert.deepStrictEqual(rows, [])
      })
    )
  })
})

describe("mire status tells the truth", () => {
  const setup = Layer.mergeAll(PgSubscriptionStore.layer, PgLeaseStore.layer).pipe(
    Layer.provideMerge(storeLayer()),
    Layer.provideMerge(NodeContext.layer)
  )
  /** A projection's row as a runner leaves it: a fenced lease, a checkpoint after `events` events. */
  const project = (subscriptionId: string, category: string, events: number) =>
    Effect.gen(function* () {
      const leases = yield* LeaseStore.LeaseStore
      const lease = yield* leases.acquire(subscriptionId, "worker", Duration.minutes(10))
      if (lease._tag !== "Some") return assert.fail("no lease")
      const subscription = yield* Subscription.make({ subscriptionId, categories: [category] })
      yield* eventually(Effect.filterOrFail(subscription.poll, (page) => page.length === events))
      assert.isTrue(yield* subscription.checkpoint({ workerId: "worker", fenceToken: lease.value.fenceToken }))
    })
  const statusJson = (url: string) =>
    Effect.map(mire(["status", "--json", "--url", url]), (run) => {
      assert.isTrue(Exit.isSuccess(run.exit), run.stderr)
      return JSON.parse(run.stdout) as {
        readonly subscriptions: ReadonlyArray<Record<string, unknown>>
        readonly restore: Record<string, unknown> | null
      }
    })
  const byId = (subscriptions: ReadonlyArray<Record<string, unknown>>, id: string) =>
    subscriptions.find((s) => s.subscriptionId === id) ?? assert.fail(`no ${id} in status`)

  layer(setup, { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.scoped("lag counts only a subscription's own categories: appends to one lag only the projection of it", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        yield* EventStore.append("alpha-1", "alpha", ExpectedVersion.NoStream, [event(1), event(2)])
        yield* EventStore.append("beta-1", "beta", ExpectedVersion.NoStream, [event(3)])
        yield* project("alphas", "alpha", 2)
        yield* project("betas", "beta", 1)
        yield* EventStore.append("alpha-2", "alpha", ExpectedVersion.NoStream, [event(4), event(5), event(6)])
        const parsed = yield* statusJson(url)
        const alphas = byId(parsed.subscriptions, "alphas")
        const betas = byId(parsed.subscriptions, "betas")
        assert.deepStrictEqual([alphas.lag, alphas.categories], ["3", ["alpha"]])
        assert.deepStrictEqual([betas.lag, betas.categories], ["0", ["beta"]])
        assert.strictEqual(parsed.restore, null)
        const table = yield* mire(["status", "--url", url])
        assert.match(table.stdout, /^betas\s.*\sbeta\s+0\s+0\s+ok$/m)
        assert.match(table.stdout, /^alphas\s.*\salpha\s+3\s+0\s+ok$/m)
      })
    )

    it.scoped("a deleted version: the runner's projection fails with MissingVersion and status shows it until a reset", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* PgClient.PgClient
        for (let v = 1; v <= 3; v++) {
          yield* EventStore.append("gap-1", "gap", v === 1 ? ExpectedVersion.NoStream : ExpectedVersion.Exact(v - 1), [event(v)])
        }
        yield* sql`DELETE FROM es_events WHERE stream_id = 'gap-1' AND stream_version = 2`
        const runner = yield* ProjectionRunner.run(
          [Projection.atLeastOnce({ subscriptionId: "gaps", categories: ["gap"], handle: () => Effect.void })],
          { workerId: "gap-worker", pollInterval: "50 millis" }
        )
        const failed = yield* eventually(
          Effect.filterOrFail(runner.status, (all) => all[0]?.state === "failed" && Option.isSome(all[0].recordedFailure))
        )
        assert.include(Option.getOrThrow(failed[0]!.recordedFailure).message, "MissingVersion")

        const parsed = yield* statusJson(url)
        const gaps = byId(parsed.subscriptions, "gaps")
        const failure = gaps.failure as { readonly message: string; readonly at: string }
        assert.include(failure.message, "MissingVersion")
        assert.include(failure.message, "gap-1 v2 is missing")
        assert.isFalse(Number.isNaN(Date.parse(failure.at)))
        const table = yield* mire(["status", "--url", url])
        assert.match(table.stdout, /^gaps\s.*\sFAILED$/m)
        assert.match(table.stdout, /^gaps failed at \S+: MissingVersion: subscription gaps: gap-1 v2 is missing/m)

        // A reset (a checkpoint written again) clears it.
        const store = yield* SubscriptionStore.SubscriptionStore
        yield* store.writeCheckpoint("gaps", Checkpoint.at({ transactionId: 0n, position: 0n }), Option.none())
        assert.strictEqual(byId((yield* statusJson(url)).subscriptions, "gaps").failure, null)
      })
    )
  })

  layer(setup, { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.scoped("a restore (stored transaction ids ahead of the server's) is reported with the recovery", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* PgClient.PgClient
        yield* EventStore.append("rst-1", "rst", ExpectedVersion.NoStream, [event(1)])
        yield* project("restored", "rst", 1)
        assert.strictEqual((yield* statusJson(url)).restore, null)
        const shift = (3n * 2n ** 32n).toString()
        yield* sql`UPDATE es_events SET transaction_id = (transaction_id::text::numeric + ${shift}::numeric)::text::xid8`
        yield* sql`UPDATE es_subscriptions
                   SET last_transaction_id = (last_transaction_id::text::numeric + ${shift}::numeric)::text::xid8`
        const parsed = yield* statusJson(url)
        const restore = parsed.restore ?? assert.fail("no restore in status --json")
        assert.isTrue(BigInt(String(restore.logTransactionId)) > BigInt(String(restore.serverTransactionId)))
        assert.deepStrictEqual(
          (restore.checkpointsAhead as ReadonlyArray<Record<string, unknown>>).map((c) => c.subscriptionId),
          ["restored"]
        )
        assert.include(String(restore.message), "pg_resetwal --epoch=")
        const table = yield* mire(["status", "--url", url])
        assert.match(table.stdout, /^RESTORE DETECTED: .*checkpoints ahead: restored/m)
        assert.include(table.stdout, "pg_resetwal --epoch=")
      })
    )
  })
})

describe("mire errors", () => {
  layer(NodeContext.layer, { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.effect("--help for each command; no command is one line and a failed exit", () =>
      Effect.gen(function* () {
        for (const [name, option] of [
          ["migrate", "--dry-run"],
          ["status", "--json"],
          ["tail", "<category>"]
        ] as const) {
          const help = yield* mire([name, "--help"])
          assert.isTrue(Exit.isSuccess(help.exit))
          assert.include(help.stdout, option)
          assert.include(help.stdout, "--url")
          assert.include(help.stdout, "--verbose")
        }
        const none = yield* mire([])
        assert.isTrue(Exit.isFailure(none.exit))
        assert.strictEqual(none.stderr, "mire: missing command: migrate, status, tail, reset, stream or dead-letters (mire --help lists them)")
      })
    )

    it.effect("a closed port: one line on stderr, a failed exit", () =>
      Effect.gen(function* () {
        const port = yield* closedPort
        const run = yield* mire(["status", "--url", `postgres://postgres@127.0.0.1:${port}/postgres`])
        assert.isTrue(Exit.isFailure(run.exit))
        assert.strictEqual(run.stdout, "")
        assert.strictEqual(run.stderr.split("\n").length, 1)
        assert.match(run.stderr, new RegExp(`^mire: connect ECONNREFUSED 127\\.0\\.0\\.1:${port}`))
      })
    )

    it.effect("an unknown database: the server's reason, one line; --verbose prints the cause", () =>
      Effect.gen(function* () {
        const url = new URL(serverUrl())
        url.pathname = "/mire_no_such_database"
        const run = yield* mire(["migrate", "--url", url.toString()])
        assert.isTrue(Exit.isFailure(run.exit))
        assert.strictEqual(run.stderr, 'mire: database "mire_no_such_database" does not exist (connect failed: Connection)')
        const verbose = yield* mire(["migrate", "--verbose", "--url", url.toString()])
        assert.isTrue(Exit.isFailure(verbose.exit))
        assert.isAbove(verbose.stderr.split("\n").length, 1)
      })
    )

    it.effect("DATABASE_URL is read through Config; without it, one line says what to set", () =>
      Effect.gen(function* () {
        const missing = yield* mire(["status"]).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map())))
        assert.isTrue(Exit.isFailure(missing.exit))
        assert.strictEqual(missing.stderr, "mire: no database: set DATABASE_URL or pass --url")
        const url = new URL(serverUrl())
        url.pathname = "/mire_no_such_database"
        const given = yield* mire(["status"]).pipe(
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["DATABASE_URL", url.toString()]])))
        )
        assert.match(given.stderr, /^mire: database "mire_no_such_database" does not exist/)
      })
    )
  })
})

describe("the mire executable", () => {
  const bin = fileURLToPath(new URL("../src/bin.ts", import.meta.url))

  /** Starts `mire` as a process (sources through tsx, as the workspace runs them). */
  const start = (args: ReadonlyArray<string>) => {
    const child = spawn(process.execPath, ["--conditions=@mire/source", "--import", "tsx", bin, ...args], {
      env: { ...process.env, DATABASE_URL: "" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    const output = { stdout: "", stderr: "" }
    child.stdout.on("data", (chunk) => (output.stdout += String(chunk)))
    child.stderr.on("data", (chunk) => (output.stderr += String(chunk)))
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
    return { child, output, exited }
  }

  layer(storeLayer(), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.effect("tail stops on SIGINT with exit code 0 and no checkpoint row", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* PgClient.PgClient
        const process = start(["tail", "--url", url, "signal"])
        // Starting node with tsx on a loaded machine can take many seconds.
        yield* eventually(
          Effect.filterOrFail(Effect.sync(() => process.output.stderr), (s) => s.includes("following")),
          "150 seconds"
        )
        yield* EventStore.append("signal-1", "signal", ExpectedVersion.NoStream, [event(1)])
        yield* eventually(
          Effect.filterOrFail(Effect.sync(() => process.output.stdout), (s) => s.includes('signal-1 v1 Cli.Happened {"i":1}'))
        )
        process.child.kill("SIGINT")
        const code = yield* Effect.promise(() => process.exited)
        assert.strictEqual(code, 0, process.output.stderr)
        assert.deepStrictEqual(yield* sql`SELECT subscription_id FROM es_subscriptions`, [])
      }),
      240_000
    )

    it.effect("a failure exits 1 with one line on stderr", () =>
      Effect.gen(function* () {
        const url = new URL(serverUrl())
        url.pathname = "/mire_no_such_database"
        const process = start(["status", "--url", url.toString()])
        const code = yield* Effect.promise(() => process.exited)
        assert.strictEqual(code, 1)
        assert.strictEqual(
          process.output.stderr,
          'mire: database "mire_no_such_database" does not exist (connect failed: Connection)\n'
        )
      }),
      240_000
    )
  })
})
