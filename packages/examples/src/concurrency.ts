/**
 * # Pattern: Concurrency conflicts (`concurrency`)
 *
 * **Why this pattern exists.** Two writers race on the same aggregate: both
 * load version 7, both decide, both try to save version 8. mire uses
 * optimistic concurrency, with no locks: a save expects the stream to still be
 * at the version it was loaded at, so exactly one of the two wins and the
 * other fails with a typed `ConcurrencyConflict` (and writes nothing). The
 * loser retries the whole unit of work (load again, decide again against the
 * fresh state, save again): `CommandHandler` does exactly that, with a
 * jittered exponential `Schedule` (bounded: the last conflict surfaces as a
 * typed error).
 *
 * It retries only on `ConcurrencyConflict`: the other errors (bad input, a
 * refused command, a storage failure) would fail the same way again. And a
 * command sent with a command id is idempotent: a client that resends it
 * (after a timeout, say) gets the first outcome, and nothing is appended twice.
 *
 * Run: `npm run example -- concurrency`
 *
 * @since 0.1.0
 */
import { Aggregate, CommandHandler, EventStore } from "@mire/core"
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
 * jitter, at most 100 times (the handler's default is 5 attempts; two
 * writers hammering one stream need more).
 *
 * @since 0.1.0
 */
export const retryPolicy = Schedule.exponential("1 millis").pipe(
  Schedule.jittered,
  Schedule.intersect(Schedule.recurs(100))
)

/**
 * Deposits writers × depositsEach × $1 into one wallet from concurrent
 * fibers, counting the conflicts they lose and retry; then sends one
 * command twice at once under the same command id, as a client retrying a
 * request that timed out would, and shows it applied once.
 *
 * @since 0.1.0
 */
export const make = (options: { readonly writers: number; readonly depositsEach: number }) =>
  Effect.gen(function* () {
    const id = crypto.randomUUID()
    const conflicts = yield* Ref.make(0)

    // One unit of work: load → decide → save; the handler retries it whole on a conflict,
    // and the schedule sees (and here counts) each conflict it retries.
    const deposit = CommandHandler.make({
      aggregate: Wallet,
      decide: (_: Wallet, amount: number) => Effect.succeed([Deposited.make({ amount })]),
      retry: retryPolicy.pipe(Schedule.tapInput(() => Ref.update(conflicts, (n) => n + 1)))
    })

    const writer = Effect.repeatN(deposit(id, 1), options.depositsEach - 1)
    yield* Console.log(
      `${options.writers} writers × ${options.depositsEach} deposits of $1 on ${Wallet.category}-${id}, concurrently`
    )
    yield* Effect.all(Array.from({ length: options.writers }, () => writer), { concurrency: "unbounded" })

    const wallet = yield* EventStore.loadOrDefault(Wallet, id)
    yield* Console.log(`final balance: $${wallet.state.balance} (${wallet.state.deposits} deposits, version ${wallet.version})`)
    yield* Console.log(`conflicts observed: ${yield* Ref.get(conflicts)} (each one reloaded and retried; none lost)`)

    // Idempotency: the same command id twice, racing. Exactly one appends; the other gets its outcome.
    const commandId = crypto.randomUUID()
    const outcomes = yield* Effect.all([deposit(id, 5, { commandId }), deposit(id, 5, { commandId })], {
      concurrency: "unbounded"
    })
    const tags = outcomes.map((outcome) => outcome._tag).sort()
    const record = outcomes.find((outcome) => outcome._tag === "Repeated")?.record
    const after = yield* EventStore.loadOrDefault(Wallet, id)
    yield* Console.log(
      `one command id sent twice at once: ${tags.join(" + ")}; $5 applied once (balance $${after.state.balance}, version ${after.version}${
        record === undefined ? "" : `, recorded at v${record.lastVersion}`
      })`
    )
  })

/**
 * Two fibers × 50 deposits of $1 on one wallet: the final balance is $100.
 *
 * @since 0.1.0
 */
export const program = make({ writers: 2, depositsEach: 50 })
