/**
 * # Pattern: Concurrency conflicts (`concurrency`)
 *
 * **Why this pattern exists.** Two writers race on the same aggregate: both
 * load version 7, both decide, both try to save version 8. mire uses
 * optimistic concurrency, with no locks: a save expects the stream to still be
 * at the version it was loaded at, so exactly one of the two wins and the
 * other fails with a typed `ConcurrencyConflict` (and writes nothing). The
 * loser retries the whole unit of work (load again, decide again against the
 * fresh state, save again), here with `Effect.retry` and a jittered
 * exponential `Schedule`.
 *
 * Retry only on `ConcurrencyConflict`: the other errors (bad input, a
 * refused command, a storage failure) would fail the same way again.
 *
 * Run: `npm run example -- concurrency`
 *
 * @since 0.1.0
 */
import { Aggregate, AggregateRoot, EventStore } from "@mire/core"
import { Console, Effect, Ref, Schedule, Schema } from "effect"

/**
 * @since 0.1.0
 * @category events
 */
export const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Int.pipe(Schema.positive()) })

/**
 * @since 0.1.0
 * @category models
 */
export interface Wallet {
  readonly balance: number
  readonly deposits: number
}

const initial: Wallet = { balance: 0, deposits: 0 }

/**
 * @since 0.1.0
 * @category aggregates
 */
export const Wallet = Aggregate.make({
  category: "wallet",
  events: Deposited,
  initial,
  apply: (state, event): Wallet => ({ balance: state.balance + event.amount, deposits: state.deposits + 1 })
})

/**
 * How a conflicting deposit is retried: exponential backoff from 1 ms with
 * jitter, at most 100 times.
 *
 * @since 0.1.0
 */
export const retryPolicy = Schedule.exponential("1 millis").pipe(
  Schedule.jittered,
  Schedule.intersect(Schedule.recurs(100))
)

/**
 * Deposits writers × depositsEach × $1 into one wallet from concurrent
 * fibers, counting the conflicts they lose and retry.
 *
 * @since 0.1.0
 */
export const make = (options: { readonly writers: number; readonly depositsEach: number }) =>
  Effect.gen(function* () {
    const id = crypto.randomUUID()
    const conflicts = yield* Ref.make(0)

    // One unit of work: load → record → save. A conflict fails it as a whole.
    const deposit = EventStore.loadOrDefault(Wallet, id).pipe(
      Effect.map((root) => AggregateRoot.record(root, Deposited.make({ amount: 1 }))),
      Effect.flatMap(EventStore.save),
      Effect.tapErrorTag("ConcurrencyConflict", () => Ref.update(conflicts, (n) => n + 1))
    )
    const depositWithRetry = Effect.retry(deposit, {
      schedule: retryPolicy,
      while: (error) => error._tag === "ConcurrencyConflict"
    })

    const writer = Effect.repeatN(depositWithRetry, options.depositsEach - 1)
    yield* Console.log(
      `${options.writers} writers × ${options.depositsEach} deposits of $1 on ${Wallet.category}-${id}, concurrently`
    )
    yield* Effect.all(Array.from({ length: options.writers }, () => writer), { concurrency: "unbounded" })

    const wallet = yield* EventStore.loadOrDefault(Wallet, id)
    yield* Console.log(`final balance: $${wallet.state.balance} (${wallet.state.deposits} deposits, version ${wallet.version})`)
    yield* Console.log(`conflicts observed: ${yield* Ref.get(conflicts)} (each one reloaded and retried; none lost)`)
  })

/**
 * Two fibers × 50 deposits of $1 on one wallet: the final balance is $100.
 *
 * @since 0.1.0
 */
export const program = make({ writers: 2, depositsEach: 50 })
