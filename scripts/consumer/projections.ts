/**
 * The consumer test's third program: two projections on PostgreSQL (the
 * quickstart's `account` events), run until caught up, so that
 * `mire status` has subscriptions to show.
 */
import { Aggregate, Projection, ProjectionRunner } from "@mire/core"
import { PgStore } from "@mire/pg"
import { Config, Console, Effect, Ref, Schema } from "effect"

const Opened = Schema.TaggedStruct("Opened", { owner: Schema.String })
const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Int })

const Account = Aggregate.make({
  category: "account",
  events: Schema.Union(Opened, Deposited),
  initial: { balance: 0 },
  apply: (state, event) => (event._tag === "Deposited" ? { balance: state.balance + event.amount } : state)
})

const program = Effect.gen(function* () {
  const deposited = yield* Ref.make(0)
  const opened = yield* Ref.make(0)
  const runner = yield* ProjectionRunner.run(
    [
      Projection.atLeastOnce({
        subscriptionId: "consumer-deposits",
        aggregate: Account,
        handle: ({ event }) => (event._tag === "Deposited" ? Ref.update(deposited, (n) => n + event.amount) : Effect.void)
      }),
      Projection.atLeastOnce({
        subscriptionId: "consumer-openings",
        aggregate: Account,
        handle: ({ event }) => (event._tag === "Opened" ? Ref.update(opened, (n) => n + 1) : Effect.void)
      })
    ],
    { workerId: "consumer-test", pollInterval: "100 millis" }
  )
  yield* runner.whenCaughtUp("consumer-deposits")
  yield* runner.whenCaughtUp("consumer-openings")
  yield* Console.log(`projections caught up: ${yield* Ref.get(opened)} opened, ${yield* Ref.get(deposited)} deposited`)
})

Effect.runPromise(
  program.pipe(Effect.scoped, Effect.provide(PgStore.layerClientConfig({ url: Config.redacted("DATABASE_URL") })))
)
