/**
 * # Pattern: Projections (read models) (`projection`)
 *
 * **Why this pattern exists.** Aggregates are great for writing and terrible
 * for querying: "every account with its balance, richest first" would mean
 * loading and folding every stream. A projection turns the log into a table
 * shaped for the query, and a `ProjectionRunner` keeps that table current: it
 * follows the log through a subscription (commit-safe, in order within each
 * stream, resumable from a checkpoint) and hands each event to the handler.
 *
 * A projection picks one of two delivery guarantees:
 *
 * - **`Projection.atLeastOnce`**: the handler runs, then the checkpoint is
 *   written. After a crash or a failover the next leader resumes from the
 *   last checkpoint and may hand an event over again, so the handler must be
 *   **idempotent**. `account_balances` is: event `v` of a stream only touches
 *   a row still below version `v`, so a replayed event changes nothing. The
 *   handler may write anywhere (another database, a cache, an API).
 * - **`Projection.transactional`**: the handler's SQL runs in the same
 *   transaction as the fenced checkpoint. Both commit or neither does, so
 *   each event lands exactly once, and the handler may use a plain,
 *   non-idempotent increment (`account_totals`). It only works for a read
 *   model in the same PostgreSQL database as the log.
 *
 * The runner is Scope-managed: closing its scope stops the projections and
 * frees their leases. Here one runner drives both projections; in
 * production run it on every replica (see `multi_replica`).
 *
 * Run: `npm run example -- projection`
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Aggregate, AggregateRoot, EventStore, Projection, ProjectionRunner } from "@mire/core"
import { Console, Effect, Schema } from "effect"

/**
 * @since 0.1.0
 * @category events
 */
export const Opened = Schema.TaggedStruct("Opened", { owner: Schema.String })
/**
 * @since 0.1.0
 * @category events
 */
export const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Int.pipe(Schema.positive()) })
/**
 * @since 0.1.0
 * @category events
 */
export const Withdrawn = Schema.TaggedStruct("Withdrawn", { amount: Schema.Int.pipe(Schema.positive()) })

/**
 * @since 0.1.0
 * @category events
 */
export const SavingsEvent = Schema.Union(Opened, Deposited, Withdrawn)

/**
 * @since 0.1.0
 * @category events
 */
export type SavingsEvent = typeof SavingsEvent.Type

/**
 * @since 0.1.0
 * @category models
 */
export interface Savings {
  readonly owner: string
  readonly balance: number
}

const initial: Savings = { owner: "", balance: 0 }

/**
 * The savings account aggregate, in streams `savings-<id>`.
 *
 * @since 0.1.0
 * @category aggregates
 */
export const Savings = Aggregate.make({
  category: "savings",
  events: SavingsEvent,
  initial,
  apply: (state, event): Savings => {
    switch (event._tag) {
      case "Opened":
        return { ...state, owner: event.owner }
      case "Deposited":
        return { ...state, balance: state.balance + event.amount }
      case "Withdrawn":
        return { ...state, balance: state.balance - event.amount }
    }
  }
})

/**
 * Creates the two read-model tables (once; reruns reuse them).
 *
 * @since 0.1.0
 */
export const createTables = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    CREATE TABLE IF NOT EXISTS account_balances (
      account_id text PRIMARY KEY,
      owner text,
      balance bigint NOT NULL,
      version int NOT NULL
    )`
  yield* sql`
    CREATE TABLE IF NOT EXISTS account_totals (
      subscription_id text PRIMARY KEY,
      accounts int NOT NULL,
      deposited bigint NOT NULL,
      withdrawn bigint NOT NULL
    )`
})

/** What one event changes in the read models. */
const effectOf = (event: SavingsEvent) => {
  switch (event._tag) {
    case "Opened":
      return { owner: event.owner, opened: 1, deposited: 0, withdrawn: 0 }
    case "Deposited":
      return { owner: null, opened: 0, deposited: event.amount, withdrawn: 0 }
    case "Withdrawn":
      return { owner: null, opened: 0, deposited: 0, withdrawn: event.amount }
  }
}

/**
 * The balance of every account, one row each: an at-least-once projection
 * with an idempotent upsert.
 *
 * Event `v` of a stream applies only to a row at a lower version. The
 * runner hands each stream's events over in order, so a row at version `k`
 * has had exactly events 1..k applied, and a replay (from an older
 * checkpoint, or a rebuild) skips everything up to `k`: it cannot count a
 * deposit twice.
 *
 * @since 0.1.0
 * @category projections
 */
export const balances = (subscriptionId: string) =>
  Projection.atLeastOnce({
    subscriptionId,
    aggregate: Savings,
    handle: ({ event, recorded }) =>
      Effect.flatMap(SqlClient.SqlClient, (sql) => {
        const { owner, deposited, withdrawn } = effectOf(event)
        const accountId = recorded.streamId.slice(Savings.category.length + 1)
        return sql`
          INSERT INTO account_balances (account_id, owner, balance, version)
          VALUES (${accountId}, ${owner}, ${deposited - withdrawn}, ${recorded.streamVersion})
          ON CONFLICT (account_id) DO UPDATE
            SET owner = COALESCE(excluded.owner, account_balances.owner),
                balance = account_balances.balance + excluded.balance,
                version = excluded.version
            WHERE account_balances.version < excluded.version`
      })
  })

/**
 * Running totals over every savings account: a transactional projection.
 *
 * A plain `accounts = accounts + 1` is not idempotent: applied twice, it
 * counts twice. It is safe here because the increment commits in the same
 * transaction as the checkpoint that moves past the event. If the runner
 * dies before that commit, both roll back and the event is handed over
 * again to a table that never saw it; a leader that lost its lease has its
 * whole transaction refused by the fence.
 *
 * @since 0.1.0
 * @category projections
 */
export const totals = (subscriptionId: string) =>
  Projection.transactional({
    subscriptionId,
    aggregate: Savings,
    handle: ({ event }) =>
      Effect.flatMap(SqlClient.SqlClient, (sql) => {
        const { opened, deposited, withdrawn } = effectOf(event)
        return sql`
          INSERT INTO account_totals (subscription_id, accounts, deposited, withdrawn)
          VALUES (${subscriptionId}, ${opened}, ${deposited}, ${withdrawn})
          ON CONFLICT (subscription_id) DO UPDATE
            SET accounts = account_totals.accounts + excluded.accounts,
                deposited = account_totals.deposited + excluded.deposited,
                withdrawn = account_totals.withdrawn + excluded.withdrawn`
      })
  })

interface BalanceRow {
  readonly account_id: string
  readonly owner: string | null
  readonly balance: number
  readonly version: number
}

const readBalances = (ids: ReadonlyArray<string>) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql<BalanceRow>`
      SELECT account_id, owner, balance::float8 AS balance, version
      FROM account_balances WHERE ${sql.in("account_id", ids)}
      ORDER BY balance DESC, owner`
  )

const show = (rows: ReadonlyArray<BalanceRow>) =>
  rows.map((r) => `${r.owner}=$${r.balance}@v${r.version}`).join(", ")

/**
 * Saves three accounts' events, lets a runner project them into two tables,
 * queries the tables, then replays every event through the balances
 * handler once more to show that the replay changes nothing.
 *
 * @since 0.1.0
 */
export const program = Effect.scoped(
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    yield* createTables

    // Unique subscription ids per run, so reruns on one database do not collide.
    const run = crypto.randomUUID().slice(0, 8)
    const balancesId = `account-balances-${run}`
    const totalsId = `account-totals-${run}`
    const options = { workerId: `projection-example-${run}`, pollInterval: "50 millis" } as const
    const runner = yield* ProjectionRunner.run([balances(balancesId), totals(totalsId)], options)
    yield* Console.log(`runner ${runner.workerId}: ${balancesId} (at-least-once), ${totalsId} (transactional)`)

    const accounts = [
      [Opened.make({ owner: "Ada" }), Deposited.make({ amount: 100 }), Deposited.make({ amount: 50 }), Withdrawn.make({ amount: 30 })],
      [Opened.make({ owner: "Grace" }), Deposited.make({ amount: 75 })],
      [Opened.make({ owner: "Linus" })]
    ]
    const ids = yield* Effect.forEach(accounts, (events) =>
      EventStore.loadOrDefault(Savings, crypto.randomUUID()).pipe(
        Effect.map((root) => AggregateRoot.record(root, ...events)),
        Effect.flatMap(EventStore.save),
        Effect.map((root) => root.id)
      )
    )
    yield* Console.log(`saved ${accounts.flat().length} events on ${ids.length} accounts`)

    // No sleeps: wait until each projection's checkpoint has passed everything appended so far.
    yield* runner.whenCaughtUp(balancesId)
    yield* runner.whenCaughtUp(totalsId)
    yield* Console.log("both projections caught up")

    const rows = yield* readBalances(ids)
    yield* Console.log("account_balances (at-least-once, idempotent upsert):")
    yield* Effect.forEach(rows, (r) => Console.log(`  ${r.owner}: balance $${r.balance}, version ${r.version}`), {
      discard: true
    })

    // The totals cover every savings account in the log, earlier runs' included.
    const [total] = yield* sql<{ accounts: number; deposited: number; withdrawn: number }>`
      SELECT accounts, deposited::float8 AS deposited, withdrawn::float8 AS withdrawn
      FROM account_totals WHERE subscription_id = ${totalsId}`
    const [table] = yield* sql<{ accounts: number; balance: number }>`
      SELECT count(*)::int AS accounts, COALESCE(sum(balance), 0)::float8 AS balance FROM account_balances`
    if (total !== undefined && table !== undefined) {
      yield* Console.log(
        `account_totals (transactional, exactly once): ${total.accounts} accounts opened, ` +
          `$${total.deposited} deposited, $${total.withdrawn} withdrawn`
      )
      const agree = total.accounts === table.accounts && total.deposited - total.withdrawn === table.balance
      yield* Console.log(
        `totals ${agree ? "agree" : "DISAGREE"} with account_balances: ${table.accounts} accounts, $${table.balance} in all`
      )
    }

    // At-least-once in action: hand every savings event to the balances handler again.
    const replay = yield* ProjectionRunner.rebuild(balances(`${balancesId}-replay`), options)
    const after = yield* readBalances(ids)
    const unchanged = show(after) === show(rows)
    yield* Console.log(
      `replayed ${replay.done} events through the balances handler again: ${unchanged ? "balances unchanged" : `CHANGED to ${show(after)}`}`
    )
  })
)
