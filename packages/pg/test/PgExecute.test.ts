/**
 * The executor of mire's hot statements (issue 12): the connection it runs
 * on, the span it leaves, and a pool connection never lost to an interrupt.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Execute from "../src/internal/execute.js"
import { clientLayer, database } from "./utils.js"
import { traced } from "../../../test/spans.js"

/** All four connections of the pool are back: four transactions hold one each at once. */
const allFourBack = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const together = yield* Deferred.make<void>()
  let running = 0
  yield* Effect.forEach(
    [1, 2, 3, 4],
    () =>
      sql.withTransaction(
        Effect.zipRight(
          Effect.suspend(() => (++running === 4 ? Deferred.succeed(together, undefined) : Effect.void)),
          Deferred.await(together)
        )
      ),
    { concurrency: "unbounded", discard: true }
  ).pipe(
    Effect.timeoutFail({
      duration: "10 seconds",
      onTimeout: () => new Error(`only ${running} of the pool's 4 connections came back`)
    })
  )
})

describe("StatementScope", () => {
  it.effect("runs its finalizers once, in reverse order, each whatever the others do; a late one at once", () =>
    Effect.gen(function* () {
      const scope = new Execute.StatementScope()
      const ran: Array<string> = []
      const record = (name: string) => (exit: Exit.Exit<unknown, unknown>) =>
        Effect.sync(() => ran.push(`${name}:${Exit.isSuccess(exit) ? "ok" : "failed"}`))
      yield* Scope.addFinalizerExit(scope, record("first"))
      yield* Scope.addFinalizerExit(scope, () => Effect.die("boom"))
      yield* Scope.addFinalizerExit(scope, record("third"))
      const closed = yield* Effect.exit(Scope.close(scope, Exit.void))
      assert.deepStrictEqual(ran, ["third:ok", "first:ok"])
      assert.isTrue(Exit.isFailure(closed), "the dying finalizer did not fail the close")
      yield* Scope.close(scope, Exit.fail("again"))
      assert.deepStrictEqual(ran, ["third:ok", "first:ok"], "a second close ran finalizers again")
      yield* Scope.addFinalizerExit(scope, record("late"))
      assert.deepStrictEqual(ran, ["third:ok", "first:ok", "late:ok"])
    })
  )
})

describe("Execute (postgres)", () => {
  layer(clientLayer({ maxConnections: 4 }).pipe(Layer.provideMerge(database)), { timeout: "60 seconds", excludeTestServices: true })(
    (it) => {
      it.effect("inside sql.withTransaction it runs on the transaction's connection", () =>
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const execute = yield* Execute.fromContext
          const [pids, rows] = yield* sql.withTransaction(
            Effect.gen(function* () {
              // A temporary table, and a row not committed yet: visible on this connection only.
              yield* sql`CREATE TEMP TABLE execute_probe (n int) ON COMMIT DROP`
              yield* sql`INSERT INTO execute_probe VALUES (7)`
              const ours = yield* sql<{ readonly pid: number }>`SELECT pg_backend_pid() AS pid`
              const theirs = yield* execute("SELECT pg_backend_pid() AS pid", [])
              return [[ours, theirs], yield* execute("SELECT n FROM execute_probe", [])] as const
            })
          )
          assert.deepStrictEqual(pids[1], pids[0])
          assert.deepStrictEqual(rows, [{ n: 7 }])
        })
      )

      it.effect("its sql.execute span is a child of the caller's and ends with the row count, not the rows", () =>
        Effect.gen(function* () {
          const execute = yield* Execute.fromContext
          const { value: rows, spans } = yield* traced(
            Effect.withSpan(execute("SELECT generate_series(1, $1::int) AS n", [3]), "caller")
          )
          assert.strictEqual(rows.length, 3)
          const statement = spans.find((s) => s.name === "sql.execute")
          const caller = spans.find((s) => s.name === "caller")
          assert.isDefined(statement)
          assert.isDefined(caller)
          assert.strictEqual(statement.kind, "client")
          assert.strictEqual(Option.map(statement.parent, (p) => p.spanId).pipe(Option.getOrUndefined), caller.spanId)
          assert.strictEqual(statement.attributes.get("db.query.text"), "SELECT generate_series(1, $1::int) AS n")
          assert.strictEqual(statement.attributes.get("db.system.name"), "postgresql")
          assert.strictEqual(statement.status._tag, "Ended")
          if (statement.status._tag === "Ended") assert.deepStrictEqual(statement.status.exit, Exit.succeed(3))
        })
      )

      it.scoped("interrupted while it waits for a connection, it ends once one is free and gives it back", () =>
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const execute = yield* Execute.fromContext
          // Every connection of the pool (4) held until `release`.
          const release = yield* Deferred.make<void>()
          const held = yield* Deferred.make<void>()
          let holding = 0
          const holders = yield* Effect.forkScoped(
            Effect.forEach(
              [1, 2, 3, 4],
              () =>
                Effect.scoped(
                  Effect.zipRight(
                    Effect.zipRight(
                      sql.reserve,
                      Effect.suspend(() => (++holding === 4 ? Deferred.succeed(held, undefined) : Effect.void))
                    ),
                    Deferred.await(release)
                  )
                ),
              { concurrency: "unbounded", discard: true }
            )
          )
          yield* Deferred.await(held)
          const waiting = yield* Effect.fork(execute("SELECT 1 AS one", []))
          // Suspended: waiting for the pool (nothing else can answer it while every connection is held).
          yield* Effect.repeat(Fiber.status(waiting), {
            until: (status) => status._tag === "Suspended",
            schedule: Schedule.spaced("5 millis")
          }).pipe(Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("the statement never waited") }))
          // The interrupt completes once the pool hands the waiting statement a connection.
          const interrupted = yield* Effect.fork(Fiber.interrupt(waiting))
          yield* Deferred.succeed(release, undefined)
          yield* Fiber.join(holders)
          const exit = yield* Fiber.join(interrupted).pipe(
            Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("the interrupt never completed") })
          )
          assert.isTrue(Exit.isInterrupted(exit), "the waiting statement was not interrupted")
          yield* allFourBack
        })
      )

      it.effect("a statement that fails, or is interrupted while it runs, gives its connection back", () =>
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const execute = yield* Execute.fromContext
          // More failures than the pool has connections.
          for (let i = 0; i < 6; i++) {
            const failed = yield* Effect.exit(execute("SELECT 1 / $1::int AS n", [0]))
            assert.isTrue(Exit.isFailure(failed), "division by zero succeeded")
          }
          const marker = `execute_interrupt_${Date.now()}`
          const sleeping = yield* Effect.fork(execute(`SELECT pg_sleep(30), '${marker}' AS marker`, []))
          yield* Effect.repeat(
            sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE ${`%${marker}%`} AND query NOT LIKE '%pg_stat_activity%'`,
            { until: (rows) => rows[0]?.n === 1, schedule: Schedule.spaced("10 millis") }
          ).pipe(Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("the statement never ran") }))
          const exit = yield* Fiber.interrupt(sleeping).pipe(
            Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("the interrupt did not cancel the statement") })
          )
          assert.isTrue(Exit.isInterrupted(exit), "the running statement was not interrupted")
          yield* allFourBack
        })
      )
    }
  )
})
