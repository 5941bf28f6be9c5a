/**
 * # Pattern: Aggregate lifecycle (`bank_account`)
 *
 * **Why this pattern exists.** It is the minimum shape, and every other
 * pattern builds on it: define the events (a `Schema.Union` of
 * `Schema.TaggedStruct`s), define the aggregate (a category, an initial
 * state and a pure fold), then **load → record → save**, and **load again**
 * to replay the state from the log.
 *
 * - `EventStore.loadOrDefault` replays the stream, or gives a new root at
 *   version 0 when the stream does not exist yet.
 * - `AggregateRoot.record` folds events into the state and queues them; it
 *   returns a new root and writes nothing.
 * - `EventStore.save` appends the queued events, expecting the stream to be
 *   at the version the root was loaded at (optimistic concurrency).
 *
 * Run: `npm run example -- bank_account`
 *
 * @since 0.1.0
 */
import { Aggregate, AggregateRoot, EventStore } from "@mire/core"
import { Console, Effect, Option, Schema } from "effect"

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
export const AccountEvent = Schema.Union(Opened, Deposited)

/**
 * @since 0.1.0
 * @category models
 */
export interface Account {
  readonly owner: string
  readonly balance: number
}

const initial: Account = { owner: "", balance: 0 }

/**
 * The account aggregate: events are stored as `account.opened` and
 * `account.deposited` in streams `account-<id>`.
 *
 * @since 0.1.0
 * @category aggregates
 */
export const Account = Aggregate.make({
  category: "account",
  events: AccountEvent,
  initial,
  apply: (state, event): Account => {
    switch (event._tag) {
      case "Opened":
        return { ...state, owner: event.owner }
      case "Deposited":
        return { ...state, balance: state.balance + event.amount }
    }
  }
})

/**
 * Opens an account for Ada, deposits $100, then loads it again from the log.
 *
 * @since 0.1.0
 */
export const program = Effect.gen(function* () {
  const id = crypto.randomUUID()

  const fresh = yield* EventStore.loadOrDefault(Account, id)
  yield* Console.log(`loaded ${fresh.streamId}: version ${fresh.version} (new)`)

  const recorded = AggregateRoot.record(fresh, Opened.make({ owner: "Ada" }), Deposited.make({ amount: 100 }))
  yield* Console.log(`recorded ${recorded.pending.length} events; balance in memory: $${recorded.state.balance}`)

  const saved = yield* EventStore.save(recorded)
  yield* Console.log(`saved: version ${saved.version}`)

  const reloaded = yield* EventStore.load(Account, id)
  yield* Option.match(reloaded, {
    onNone: () => Console.log("reloaded: no such account"),
    onSome: (account) =>
      Console.log(
        `reloaded from the log: owner=${account.state.owner}, balance=$${account.state.balance}, version ${account.version}`
      )
  })
})
