/**
 * The consumer test's second program: the test kit (`@mire/core/testing`) as
 * an app sees it, type-checked with strict consumer flags and run with node.
 */
import { Aggregate, InMemory, Projection } from "@mire/core"
import { AggregateSpec, ProjectionSpec } from "@mire/core/testing"
import { Console, Data, Effect, Ref, Schema } from "effect"

const Opened = Schema.TaggedStruct("Opened", { owner: Schema.String })
const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Int })

interface Account {
  readonly owner: string
  readonly balance: number
}

const Account = Aggregate.make({
  category: "account",
  events: Schema.Union(Opened, Deposited),
  initial: { owner: "", balance: 0 } as Account,
  apply: (state, event): Account =>
    event._tag === "Opened" ? { ...state, owner: event.owner } : { ...state, balance: state.balance + event.amount }
})

class NotOpen extends Data.TaggedError("NotOpen")<{}> {}

const deposit = (state: Account, amount: number) =>
  state.owner === "" ? Effect.fail(new NotOpen()) : Effect.succeed(Deposited.make({ amount }))

const program = Effect.gen(function* () {
  const outcome = yield* AggregateSpec.given(Account, Opened.make({ owner: "Ada" }))
    .when((state) => deposit(state, 40))
    .thenEvents(Deposited.make({ amount: 40 }))
  yield* AggregateSpec.given(Account)
    .when((state) => deposit(state, 40))
    .thenFails(new NotOpen())

  const total = yield* Ref.make(0)
  const deposits = Projection.atLeastOnce({
    subscriptionId: "deposits",
    aggregate: Account,
    handle: ({ event }) => (event._tag === "Deposited" ? Ref.update(total, (n) => n + event.amount) : Effect.void)
  })
  const projected = yield* ProjectionSpec.given(
    deposits,
    ProjectionSpec.stream(Account, "a1", Opened.make({ owner: "Ada" }), Deposited.make({ amount: 10 }), Deposited.make({ amount: 5 }))
  ).thenReads(Ref.get(total), 15)
  yield* Console.log(`test kit: balance ${outcome.state.balance} at version ${outcome.version}, projected total ${projected}`)
})

Effect.runPromise(program.pipe(Effect.provide(InMemory.layer)))
