/**
 * The test kit's own tests: Given/When/Then for aggregates and commands,
 * projection specs and whenCaughtUp on the in-memory store.
 */
import { assert, describe, it } from "@effect/vitest"
// node:assert's deepStrictEqual: chai's takes `Option.none()` for equal to any `Option.some(…)`.
import { deepStrictEqual } from "@effect/vitest/utils"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as AggregateRoot from "../src/AggregateRoot.js"
import * as EventStore from "../src/EventStore.js"
import * as InMemory from "../src/InMemory.js"
import * as Projection from "../src/Projection.js"
import * as ProjectionRunner from "../src/ProjectionRunner.js"
import { AggregateSpec, ProjectionSpec, SpecFailure } from "../src/testing/index.js"
import { type AccountEvent, type AccountState, account, Closed, Deposited, Opened, TxReadModel, Withdrawn } from "@mire/core/conformance"
import { memoryReadModel } from "./memoryRaw.js"

const Account = account("kit")

class AccountNotOpen extends Data.TaggedError("AccountNotOpen")<{ readonly owner: string }> {}
class InsufficientFunds extends Data.TaggedError("InsufficientFunds")<{ readonly balance: number; readonly requested: number }> {}

const deposit = (state: AccountState, amount: number): Effect.Effect<ReadonlyArray<AccountEvent>, AccountNotOpen> =>
  state.open ? Effect.succeed([Deposited.make({ amount })]) : Effect.fail(new AccountNotOpen({ owner: state.owner }))

const withdraw = (state: AccountState, amount: number) =>
  Effect.gen(function* () {
    if (!state.open) return yield* new AccountNotOpen({ owner: state.owner })
    if (amount > state.balance) return yield* new InsufficientFunds({ balance: state.balance, requested: amount })
    return [Withdrawn.make({ amount })]
  })

/** A pure command: at most one event, no Effect. */
const close = (state: AccountState): AccountEvent | undefined => (state.open ? Closed.make({}) : undefined)

const opened = Opened.make({ owner: "Ada" })

describe("AggregateSpec", () => {
  it.effect("given events, when a command runs, then these new events; the outcome has the state after", () =>
    Effect.gen(function* () {
      const outcome = yield* AggregateSpec.given(Account, opened, Deposited.make({ amount: 10 }))
        .when((state) => deposit(state, 5))
        .thenEvents(Deposited.make({ amount: 5 }))
      assert.deepStrictEqual(outcome.state, { owner: "Ada", balance: 15, open: true, events: 3 })
      assert.strictEqual(outcome.version, 3)
    }))

  it.effect("thenEvents: other events fail the spec, naming both", () =>
    Effect.gen(function* () {
      const failure = yield* Effect.flip(
        AggregateSpec.given(Account, opened).when((state) => deposit(state, 5)).thenEvents(Deposited.make({ amount: 6 }))
      )
      assert.strictEqual(failure._tag, "SpecFailure")
      assert.strictEqual(failure.assertion, "thenEvents: the new events")
      assert.include(failure.expected, `"amount":6`)
      assert.include(failure.actual, `"amount":5`)
      const tooMany = yield* Effect.flip(AggregateSpec.given(Account, opened).when((state) => deposit(state, 5)).thenEvents())
      assert.strictEqual(tooMany.assertion, "thenEvents: the new events")
    }))

  it.effect("thenEvents: a command that fails instead fails the spec with its error", () =>
    Effect.gen(function* () {
      const failure = yield* Effect.flip(AggregateSpec.given(Account).when((state) => deposit(state, 5)).thenEvents(Deposited.make({ amount: 5 })))
      assert.strictEqual(failure._tag, "SpecFailure")
      assert.include(failure.actual, "AccountNotOpen")
    }))

  it.effect("thenFails: the typed error, compared structurally, or by a predicate", () =>
    Effect.gen(function* () {
      const given = AggregateSpec.given(Account, opened, Deposited.make({ amount: 10 }))
      const error = yield* given.when((state) => withdraw(state, 50)).thenFails(new InsufficientFunds({ balance: 10, requested: 50 }))
      assert.strictEqual(error._tag, "InsufficientFunds")
      yield* given.when((state) => withdraw(state, 50)).thenFails((e) => e._tag === "InsufficientFunds" && e.requested === 50)
      yield* AggregateSpec.given(Account).when((state) => withdraw(state, 1)).thenFails(new AccountNotOpen({ owner: "" }))
    }))

  it.effect("thenFails: another error, or success, fails the spec", () =>
    Effect.gen(function* () {
      const given = AggregateSpec.given(Account, opened, Deposited.make({ amount: 10 }))
      const wrong = yield* Effect.flip(
        given.when((state) => withdraw(state, 50)).thenFails(new InsufficientFunds({ balance: 10, requested: 51 }))
      )
      assert.strictEqual(wrong.assertion, "thenFails: the error")
      assert.include(wrong.actual, `"requested":50`)
      const succeeded = yield* Effect.flip(given.when((state) => withdraw(state, 5)).thenFails(() => true))
      assert.strictEqual(succeeded.assertion, "thenFails: the command fails")
      assert.include(succeeded.actual, "Withdrawn")
    }))

  it.effect("thenNothing: a command that decides nothing; events fail it", () =>
    Effect.gen(function* () {
      yield* AggregateSpec.given(Account).when(close).thenNothing()
      yield* AggregateSpec.given(Account).when(() => Effect.succeed([])).thenNothing()
      const failure = yield* Effect.flip(AggregateSpec.given(Account, opened).when(close).thenNothing())
      assert.strictEqual(failure.assertion, "thenNothing: no new events")
      yield* AggregateSpec.given(Account, opened).when(close).thenEvents(Closed.make({}))
    }))

  it.effect("commands written against the root: the events it recorded are the new events", () =>
    Effect.gen(function* () {
      const outcome = yield* AggregateSpec.given(Account, opened)
        .when((_, root) => AggregateRoot.record(root, Deposited.make({ amount: 1 }), Deposited.make({ amount: 2 })))
        .thenEvents(Deposited.make({ amount: 1 }), Deposited.make({ amount: 2 }))
      assert.strictEqual(outcome.state.balance, 3)
      const root = yield* AggregateSpec.given(Account, opened, opened).root
      assert.strictEqual(root.version, 2)
      assert.strictEqual(root.streamId, "kit-spec")
    }))

  it.effect("outcome: the raw result, for custom assertions", () =>
    Effect.gen(function* () {
      const result = yield* AggregateSpec.given(Account, opened).when((state) => withdraw(state, 1)).outcome
      assert.isTrue(Either.isLeft(result))
      const ok = yield* AggregateSpec.given(Account, opened).when((state) => deposit(state, 1)).outcome
      assert.deepStrictEqual(Either.map(ok, (o) => o.version), Either.right(2))
    }))

  it.effect("events the store would refuse fail the spec: given or new", () =>
    Effect.gen(function* () {
      const invalid = { _tag: "Deposited", amount: -1 } as const
      const given = yield* Effect.flip(AggregateSpec.given(Account, opened, invalid).when(close).thenNothing())
      assert.strictEqual(given.assertion, "given: every event passes its Schema")
      const made = yield* Effect.flip(AggregateSpec.given(Account, opened).when(() => invalid).thenEvents(invalid))
      assert.strictEqual(made.assertion, "thenEvents (expected): every event passes its Schema")
    }))

  it.effect("givenStored: rows as older code wrote them are upcast, as every reader does", () =>
    Effect.gen(function* () {
      const Evolved = account("kitevo")
      // The fixture aggregate is at version 1: a version-2 row is from the future.
      const future = yield* Effect.flip(
        AggregateSpec.givenStored(Evolved, { eventType: "kitevo.deposited", schemaVersion: 2, data: { amount: 1 } })
          .when(close)
          .thenNothing()
      )
      assert.strictEqual(future._tag, "EventDecodeError")
      if (future._tag === "EventDecodeError") {
        assert.strictEqual(future.schemaVersion, 2)
        assert.strictEqual(future.streamVersion, 1)
        assert.match(future.issue, /newer/)
      }
      yield* AggregateSpec.givenStored(
        Evolved,
        { eventType: "kitevo.opened", schemaVersion: 1, data: { owner: "Ada" } },
        { eventType: "kitevo.deposited", schemaVersion: 1, data: { amount: 4 } }
      )
        .when((state) => withdraw(state, 4))
        .thenEvents(Withdrawn.make({ amount: 4 }))
      const events = yield* AggregateSpec.upcast(Evolved, { eventType: "kitevo.deposited", schemaVersion: 1, data: { amount: 4 } })
      assert.deepStrictEqual(events, [Deposited.make({ amount: 4 })])
    }))

  it.effect("SpecFailure.equals is structural; show renders bigints and errors", () =>
    Effect.sync(() => {
      assert.isTrue(SpecFailure.equals({ a: [1, { b: 2 }] }, { a: [1, { b: 2 }] }))
      assert.isFalse(SpecFailure.equals({ a: [1] }, { a: [2] }))
      assert.isTrue(SpecFailure.equals(new InsufficientFunds({ balance: 1, requested: 2 }), new InsufficientFunds({ balance: 1, requested: 2 })))
      assert.strictEqual(SpecFailure.show({ p: 1n }), `{"p":"1n"}`)
      assert.include(SpecFailure.show(new AccountNotOpen({ owner: "x" })), `"_tag":"AccountNotOpen"`)
    }))
})

/** An at-least-once balances read model, in process. */
const balances = (subscriptionId = "kit-balances") => {
  const rows = new Map<string, number>()
  const projection = Projection.atLeastOnce({
    subscriptionId,
    aggregate: Account,
    handle: ({ event, recorded }) =>
      Effect.sync(() => {
        const before = rows.get(recorded.streamId) ?? 0
        if (event._tag === "Deposited") rows.set(recorded.streamId, before + event.amount)
        else if (event._tag === "Withdrawn") rows.set(recorded.streamId, before - event.amount)
        else rows.set(recorded.streamId, before)
      })
  })
  return { projection, read: (id: string) => Effect.sync(() => Option.fromNullable(rows.get(`${Account.category}-${id}`))) }
}

describe("ProjectionSpec", () => {
  it.live("given events, then the read model reads so", () =>
    Effect.gen(function* () {
      const { projection, read } = balances()
      const got = yield* ProjectionSpec.given(
        projection,
        ProjectionSpec.stream(Account, "a1", opened, Deposited.make({ amount: 10 })),
        ProjectionSpec.stream(Account, "a2", opened),
        ProjectionSpec.stream(Account, "a1", Withdrawn.make({ amount: 3 }))
      ).thenReads(Effect.all([read("a1"), read("a2"), read("a3")]), [Option.some(7), Option.some(0), Option.none()])
      deepStrictEqual(got, [Option.some(7), Option.some(0), Option.none()])
    }).pipe(Effect.provide(InMemory.layer)))

  it.live("thenReads: another read model fails the spec", () =>
    Effect.gen(function* () {
      const { projection, read } = balances()
      const failure = yield* Effect.flip(
        ProjectionSpec.given(projection, ProjectionSpec.stream(Account, "a1", opened, Deposited.make({ amount: 10 }))).thenReads(
          read("a1"),
          Option.some(11)
        )
      )
      assert.strictEqual(failure._tag, "SpecFailure")
    }).pipe(Effect.provide(InMemory.layer)))

  it.live("a transactional handler: rows commit with the checkpoint", () =>
    Effect.gen(function* () {
      const model = yield* TxReadModel
      const projection = Projection.transactional({
        subscriptionId: "kit-tx",
        aggregate: Account,
        handle: ({ event, recorded }) => model.insert(`tx:${recorded.streamId}:${event._tag}`)
      })
      yield* ProjectionSpec.given(
        projection,
        ProjectionSpec.stream(Account, "t1", opened, Deposited.make({ amount: 1 })),
        ProjectionSpec.stored("kit-t2", "kit", { eventType: "kit.opened", schemaVersion: 1, data: { owner: "Bob" } })
      ).thenReads(
        Effect.map(model.rows("tx:"), (rows) => [...rows].sort()),
        ["tx:kit-t1:Deposited", "tx:kit-t1:Opened", "tx:kit-t2:Opened"]
      )
    }).pipe(Effect.provide(memoryReadModel.pipe(Layer.provideMerge(InMemory.layer)))))

  it.live("start + whenCaughtUp: no sleeps, however late the events come", () =>
    Effect.gen(function* () {
      const { projection, read } = balances()
      const running = yield* ProjectionSpec.start(projection)
      for (let i = 1; i <= 5; i++) {
        yield* EventStore.save(AggregateRoot.record(yield* EventStore.loadOrDefault(Account, "live"), Deposited.make({ amount: i })))
        yield* running.whenCaughtUp()
        deepStrictEqual(yield* read("live"), Option.some((i * (i + 1)) / 2))
      }
      const status = yield* running.status
      assert.strictEqual(status.state, "leader")
      assert.strictEqual(status.handled, 5)
    }).pipe(Effect.scoped, Effect.provide(InMemory.layer)))

  it.live("whenCaughtUp fails at once with ProjectionFailed when the projection stopped on an event", () =>
    Effect.gen(function* () {
      const projection = Projection.atLeastOnce({
        subscriptionId: "kit-poison",
        aggregate: Account,
        handle: ({ event }) => (event._tag === "Withdrawn" ? Effect.fail("poisoned" as const) : Effect.void)
      })
      const running = yield* ProjectionSpec.start(projection)
      yield* ProjectionSpec.stream(Account, "p1", opened, Withdrawn.make({ amount: 1 }), Deposited.make({ amount: 1 }))
      // Not NotCaughtUp after 30 s: ProjectionFailed, as soon as the projection stops (no wall-clock bound needed).
      const failure = yield* Effect.flip(running.whenCaughtUp("30 seconds"))
      assert.strictEqual(failure._tag, "ProjectionFailed")
      if (failure._tag === "ProjectionFailed") {
        assert.strictEqual(failure.streamId, "kit-p1")
        assert.strictEqual(failure.streamVersion, 2)
        assert.strictEqual(failure.attempts, 3)
      }
    }).pipe(Effect.scoped, Effect.provide(InMemory.layer)))

  it.live("whenCaughtUp times out with NotCaughtUp and the lag", () =>
    Effect.gen(function* () {
      const gate = yield* Deferred.make<void>()
      const projection = Projection.atLeastOnce({ subscriptionId: "kit-slow", aggregate: Account, handle: () => Deferred.await(gate) })
      const running = yield* ProjectionSpec.start(projection)
      yield* ProjectionSpec.stream(Account, "s1", opened, opened)
      const failure = yield* Effect.flip(running.whenCaughtUp("300 millis"))
      assert.strictEqual(failure._tag, "NotCaughtUp")
      if (failure._tag === "NotCaughtUp") assert.strictEqual(failure.lag, 2)
      yield* Deferred.succeed(gate, undefined)
      yield* running.whenCaughtUp()
    }).pipe(Effect.scoped, Effect.provide(InMemory.layer)))

  it.live("whenCaughtUp(projection) with the ProjectionRunner in context", () => {
    const { projection, read } = balances("kit-layered")
    return Effect.gen(function* () {
      yield* ProjectionSpec.stream(Account, "l1", opened, Deposited.make({ amount: 2 }))
      yield* ProjectionSpec.whenCaughtUp(projection)
      deepStrictEqual(yield* read("l1"), Option.some(2))
      const missing = yield* Effect.flip(ProjectionSpec.whenCaughtUp("not-run-here"))
      assert.strictEqual(missing._tag, "InvalidInput")
    }).pipe(
      Effect.provide(
        ProjectionRunner.layer([projection], { workerId: "kit", ...ProjectionSpec.defaults }).pipe(Layer.provideMerge(InMemory.layer))
      )
    )
  })
})
