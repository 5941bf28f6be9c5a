/**
 * # Pattern: Read-before-write across aggregates (`transaction_scope`)
 *
 * **Why this pattern exists.** Most of the time mire wants each aggregate
 * independent of every other: that is what makes event sourcing scale. But
 * occasionally one business decision genuinely spans two aggregates:
 * "transfer $X from account A to account B; both succeed or both fail."
 *
 * For that case `EventStore.transaction(effect)` runs `effect` in one
 * PostgreSQL transaction, in which you can:
 *
 * 1. Load several aggregates in the same transaction.
 * 2. Use `EventStore.loadForUpdate` to lock the streams the decision depends
 *    on, so a concurrent writer cannot slip in between your read and your
 *    write. Lock in a consistent order (here: sorted by id), so transfers
 *    running in both directions at once cannot deadlock.
 * 3. Save events for all of them atomically: the transaction commits when
 *    `effect` succeeds, and rolls back (releasing the locks) when it fails
 *    with a typed error, dies or is interrupted.
 *
 * This is a deliberate **escape hatch**, not the default. If you find
 * yourself reaching for `loadForUpdate` in steady-state command code, the
 * projection boundary is probably in the wrong place. Keep the scope short:
 * a long transaction on a hot stream blocks its writers, and holds back
 * every subscription (through the xmin horizon) until it ends.
 *
 * `loadForUpdate` outside `EventStore.transaction` is refused
 * (`InvalidInput`), and a stream that does not exist yet takes no lock
 * (there is no row to lock), so the transfer refuses unknown accounts.
 *
 * Run: `npm run example -- transaction_scope`
 *
 * @since 0.1.0
 */
import { Aggregate, AggregateRoot, EventStore } from "@mire/core"
import { Console, Data, Effect, Option, Schema } from "effect"

/**
 * @since 0.1.0
 * @category events
 */
export const Opened = Schema.TaggedStruct("Opened", { initial: Schema.Int.pipe(Schema.nonNegative()) })
/**
 * @since 0.1.0
 * @category events
 */
export const Debited = Schema.TaggedStruct("Debited", { amount: Schema.Int.pipe(Schema.positive()) })
/**
 * @since 0.1.0
 * @category events
 */
export const Credited = Schema.TaggedStruct("Credited", { amount: Schema.Int.pipe(Schema.positive()) })

/**
 * @since 0.1.0
 * @category models
 */
export interface Funds {
  readonly balance: number
}

const initial: Funds = { balance: 0 }

/**
 * @since 0.1.0
 * @category aggregates
 */
export const Funds = Aggregate.make({
  category: "funds",
  events: Schema.Union(Opened, Debited, Credited),
  initial,
  apply: (state, event): Funds => {
    switch (event._tag) {
      case "Opened":
        return { balance: event.initial }
      case "Debited":
        return { balance: state.balance - event.amount }
      case "Credited":
        return { balance: state.balance + event.amount }
    }
  }
})

/**
 * @since 0.1.0
 * @category errors
 */
export class InvalidAmount extends Data.TaggedError("InvalidAmount")<{ readonly amount: number }> {
  override get message(): string {
    return `transfer amount must be a positive whole number, got ${this.amount}`
  }
}

/**
 * @since 0.1.0
 * @category errors
 */
export class AccountNotFound extends Data.TaggedError("AccountNotFound")<{ readonly id: string }> {
  override get message(): string {
    return `account ${this.id} does not exist`
  }
}

/**
 * @since 0.1.0
 * @category errors
 */
export class InsufficientFunds extends Data.TaggedError("InsufficientFunds")<{
  readonly id: string
  readonly balance: number
  readonly amount: number
}> {
  override get message(): string {
    return `insufficient funds in ${this.id}: balance ${this.balance}, transfer ${this.amount}`
  }
}

/**
 * Opens an account with an initial balance: one aggregate, no transaction.
 *
 * @since 0.1.0
 */
export const openAccount = (id: string, amount: number) =>
  EventStore.loadOrDefault(Funds, id).pipe(
    Effect.map((root) => AggregateRoot.record(root, Opened.make({ initial: amount }))),
    Effect.flatMap(EventStore.save)
  )

const lock = (id: string) =>
  EventStore.loadForUpdate(Funds, id).pipe(
    Effect.flatMap(
      Option.match({
        onNone: () => Effect.fail(new AccountNotFound({ id })),
        onSome: Effect.succeed
      })
    )
  )

/**
 * Moves `amount` from one account to another, atomically.
 *
 * Without the locks a concurrent writer could change `from`'s balance
 * between our read and our save and take it below zero; with them, our view
 * of both accounts is stable until we commit.
 *
 * @since 0.1.0
 */
export const transfer = (fromId: string, toId: string, amount: number) =>
  Effect.gen(function* () {
    if (!(Number.isSafeInteger(amount) && amount > 0)) return yield* new InvalidAmount({ amount })
    return yield* EventStore.transaction(
      Effect.gen(function* () {
        // Lock in one global order (by id) so opposite transfers cannot deadlock.
        const [firstId, secondId] = fromId <= toId ? [fromId, toId] : [toId, fromId]
        const first = yield* lock(firstId)
        const second = yield* lock(secondId)
        const [from, to] = first.id === fromId ? [first, second] : [second, first]

        // The cross-aggregate invariant: the source cannot overdraw.
        if (from.state.balance < amount) {
          return yield* new InsufficientFunds({ id: fromId, balance: from.state.balance, amount })
        }
        yield* EventStore.saveMany([
          AggregateRoot.record(from, Debited.make({ amount })),
          AggregateRoot.record(to, Credited.make({ amount }))
        ])
      })
    )
  })

const balances = (alice: string, bob: string) =>
  Effect.map(
    Effect.all([EventStore.loadOrDefault(Funds, alice), EventStore.loadOrDefault(Funds, bob)]),
    ([a, b]) => ({ alice: a.state.balance, bob: b.state.balance })
  )

const show = ({ alice, bob }: { readonly alice: number; readonly bob: number }) =>
  `Alice=${alice}, Bob=${bob}, sum ${alice + bob}`

/**
 * A transfer, a refused overdraft that leaves both accounts unchanged, and
 * concurrent transfers in both directions.
 *
 * @since 0.1.0
 */
export const program = Effect.gen(function* () {
  const alice = crypto.randomUUID()
  const bob = crypto.randomUUID()
  yield* openAccount(alice, 100)
  yield* openAccount(bob, 0)

  yield* transfer(alice, bob, 30)
  const before = yield* balances(alice, bob)
  yield* Console.log(`after $30 transfer: ${show(before)}`)

  // The overdraft is caught inside the transaction: it rolls back and nothing commits.
  yield* transfer(alice, bob, 1_000_000).pipe(
    Effect.zipRight(Console.log("transfer of $1000000 went through?!")),
    Effect.catchTag("InsufficientFunds", (e) => Console.log(`rejected: ${e.message}`))
  )
  const after = yield* balances(alice, bob)
  const unchanged = after.alice === before.alice && after.bob === before.bob
  yield* Console.log(`after rejected transfer: ${show(after)} (${unchanged ? "unchanged" : "CHANGED"})`)

  // Ten $1 transfers each way at once: the locks serialise them, the lock order prevents deadlocks.
  const each = 10
  yield* Effect.all(
    Array.from({ length: each * 2 }, (_, i) => (i % 2 === 0 ? transfer(alice, bob, 1) : transfer(bob, alice, 1))),
    { concurrency: "unbounded" }
  )
  yield* Console.log(`after ${each * 2} concurrent $1 transfers in both directions: ${show(yield* balances(alice, bob))}`)

  yield* Console.log(
    "The two aggregates moved together (commit) or not at all (rollback). " +
      "The locks kept concurrent transfers from racing the read-decide-write."
  )
})
