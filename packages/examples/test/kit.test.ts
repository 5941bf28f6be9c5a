/**
 * The examples' domain tested with the test kit: command functions with
 * Given/When/Then (pure, no store), and the projection example's read models
 * with projection specs on PostgreSQL (the transactional one must commit with
 * its checkpoint there).
 */
import { assert, describe, it, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { AggregateSpec, ProjectionSpec } from "@mire/core/testing"
import * as EventStore from "@mire/core/EventStore"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as PgStore from "../../pg/src/PgStore.js"
import { migratedLayer } from "../../pg/test/utils.js"
import {
  AccountNotOpen,
  AlreadyOpen,
  Checking,
  Closed,
  close,
  Deposited,
  deposit,
  InsufficientFunds,
  InvalidAmount,
  Opened,
  open,
  withdraw
} from "../src/commands.js"
import * as projection from "../src/projection.js"

describe("commands, Given/When/Then", () => {
  it.effect("opening a new account records Opened", () =>
    Effect.asVoid(AggregateSpec.given(Checking).when((state) => open(state, "Ada")).thenEvents(Opened.make({ owner: "Ada" }))))

  it.effect("a deposit on an open account", () =>
    Effect.gen(function* () {
      const outcome = yield* AggregateSpec.given(Checking, Opened.make({ owner: "Ada" }))
        .when((state) => deposit(state, 40))
        .thenEvents(Deposited.make({ amount: 40 }))
      assert.strictEqual(outcome.state.balance, 40)
      assert.strictEqual(outcome.version, 2)
    }))

  it.effect("no overdraft", () =>
    Effect.asVoid(
      AggregateSpec.given(Checking, Opened.make({ owner: "Ada" }), Deposited.make({ amount: 10 }))
        .when((state) => withdraw(state, 50))
        .thenFails(new InsufficientFunds({ balance: 10, requested: 50 }))
    ))

  it.effect("nothing on a closed account", () =>
    Effect.asVoid(
      AggregateSpec.given(Checking, Opened.make({ owner: "Ada" }), Closed.make({}))
        .when((state) => deposit(state, 5))
        .thenFails((e) => e instanceof AccountNotOpen && e.status === "closed")
    ))

  it.effect("no second opening, no non-positive amounts", () =>
    Effect.gen(function* () {
      yield* AggregateSpec.given(Checking, Opened.make({ owner: "Ada" }))
        .when((state) => open(state, "Bob"))
        .thenFails(new AlreadyOpen({ owner: "Ada" }))
      yield* AggregateSpec.given(Checking, Opened.make({ owner: "Ada" }))
        .when((state) => deposit(state, 0))
        .thenFails((e) => e instanceof InvalidAmount)
      yield* AggregateSpec.given(Checking, Opened.make({ owner: "Ada" })).when(close).thenEvents(Closed.make({}))
    }))
})

describe("projection example, projection specs on PostgreSQL", () => {
  layer(PgStore.layer.pipe(Layer.provideMerge(migratedLayer())), { timeout: "60 seconds", excludeTestServices: true })(
    (it) => {
      const balanceOf = (id: string) =>
        Effect.flatMap(SqlClient.SqlClient, (sql) =>
          sql<{ balance: number; version: number }>`
            SELECT balance::int AS balance, version FROM account_balances WHERE account_id = ${id}`
        ).pipe(Effect.map((rows) => rows[0]))

      it.effect("balances: given deposits and a withdrawal, the row reads the balance at its version", () =>
        Effect.gen(function* () {
          yield* projection.createTables
          const id = `kit-${crypto.randomUUID().slice(0, 8)}`
          yield* ProjectionSpec.given(
            projection.balances(`kit-balances-${id}`),
            ProjectionSpec.stream(
              projection.Savings,
              id,
              projection.Opened.make({ owner: "Ada" }),
              projection.Deposited.make({ amount: 100 }),
              projection.Withdrawn.make({ amount: 30 })
            )
          ).thenReads(balanceOf(id), { balance: 70, version: 3 })
        }))

      it.effect("totals (transactional): whenCaughtUp, then the increments are exact", () =>
        Effect.scoped(
          Effect.gen(function* () {
            yield* projection.createTables
            const subscriptionId = `kit-totals-${crypto.randomUUID().slice(0, 8)}`
            const running = yield* ProjectionSpec.start(projection.totals(subscriptionId))
            for (const id of ["k1", "k2"]) {
              yield* ProjectionSpec.stream(
                projection.Savings,
                `${subscriptionId}-${id}`,
                projection.Opened.make({ owner: id }),
                projection.Deposited.make({ amount: 5 })
              )
            }
            yield* running.whenCaughtUp()
            const sql = yield* SqlClient.SqlClient
            const [row] = yield* sql<{ accounts: number }>`
              SELECT accounts FROM account_totals WHERE subscription_id = ${subscriptionId}`
            // The totals cover the whole category: exactly one per Opened event in the log, each counted once.
            const opened = yield* EventStore.readCategory(projection.Savings.category).pipe(
              Stream.filter((e) => e.eventType === `${projection.Savings.category}.opened`),
              Stream.runCount
            )
            assert.isAtLeast(opened, 2)
            assert.strictEqual(row!.accounts, opened)
          })
        ))
    }
  )
})
