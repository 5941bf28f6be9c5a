/**
 * Projection specs on a real store (the in-memory store, or Postgres for
 * transactional handlers): given events, then the read model reads so. And
 * {@link whenCaughtUp}, so integration tests wait for a projection instead
 * of sleeping.
 *
 * ```ts
 * it.effect("balances", () =>
 *   ProjectionSpec.given(balances, ProjectionSpec.stream(Account, "a1", Opened.make({ owner: "Ada" }), Deposited.make({ amount: 10 })))
 *     .thenReads(readBalance("a1"), 10)
 *     .pipe(Effect.provide(InMemory.layer)))
 * ```
 *
 * A spec runs the projection on the store in context, under the
 * projection's own subscription id: give each spec a fresh store (provide
 * `InMemory.layer` per test) or unique categories and subscription ids.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as Aggregate from "../Aggregate.js"
import * as EventStore from "../EventStore.js"
import type { InvalidInput, StoreError, XidAhead } from "../EventStoreError.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import type * as Projection from "../Projection.js"
import * as ProjectionRunner from "../ProjectionRunner.js"
import type { NewEvent } from "../RecordedEvent.js"
import * as StreamId from "../StreamId.js"
import type * as LeaseStore from "../LeaseStore.js"
import type * as SubscriptionStore from "../SubscriptionStore.js"
import { equals, type NotCaughtUp, show, SpecFailure } from "./SpecFailure.js"

/**
 * The services a running projection needs.
 *
 * @since 0.1.0
 * @category models
 */
export type Services = SubscriptionStore.SubscriptionStore | LeaseStore.LeaseStore

/**
 * Why waiting for a projection failed: it stopped on an event
 * (`ProjectionFailed`, naming it), did not catch up in time, or the store
 * failed (`XidAhead`: its log or checkpoint is ahead of the server's
 * transaction ids).
 *
 * @since 0.1.0
 * @category models
 */
export type WaitError<E = unknown> = ProjectionRunner.ProjectionFailed<E> | NotCaughtUp | StoreError | InvalidInput | XidAhead

/**
 * Runner options for tests: quick polls and rechecks, short retries (three
 * attempts, 10 ms apart), so a failing handler stops its projection at once.
 *
 * @since 0.1.0
 * @category models
 */
export const defaults: Omit<ProjectionRunner.Options, "workerId"> = {
  pollInterval: "50 millis",
  leaseRecheckInterval: "100 millis",
  retry: Schedule.spaced("10 millis"),
  maxAttempts: 3
}

const defaultTimeout: Duration.DurationInput = "10 seconds"

/**
 * Waits until a runner's projection has handled everything committed so far
 * (no event after its checkpoint): the runner's own `whenCaughtUp`, with the
 * test default timeout (10 s). Fails at once with `ProjectionFailed` if the
 * projection stopped, and with `NotCaughtUp` after `timeout`.
 *
 * @example
 * ```ts
 * import { Aggregate, EventStore, AggregateRoot, InMemory, Projection, ProjectionRunner } from "@mire/core"
 * import { ProjectionSpec } from "@mire/core/testing"
 * import { Effect, Schema } from "effect"
 *
 * const Opened = Schema.TaggedStruct("Opened", { owner: Schema.String })
 * const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Number })
 * const Account = Aggregate.make({
 *   category: "account",
 *   events: Schema.Union(Opened, Deposited),
 *   initial: { owner: "", balance: 0 },
 *   apply: (state, event) =>
 *     event._tag === "Opened" ? { ...state, owner: event.owner } : { ...state, balance: state.balance + event.amount }
 * })
 * const balances = new Map<string, number>()
 * const Balances = Projection.atLeastOnce({
 *   subscriptionId: "balances",
 *   aggregate: Account,
 *   handle: ({ event, recorded }) =>
 *     Effect.sync(() => {
 *       if (event._tag === "Deposited") balances.set(recorded.streamId, (balances.get(recorded.streamId) ?? 0) + event.amount)
 *     })
 * })
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const runner = yield* ProjectionRunner.run([Balances], { workerId: "test" })
 *     yield* EventStore.save(AggregateRoot.record(AggregateRoot.make(Account, "a1"), Deposited.make({ amount: 10 })))
 *     yield* ProjectionSpec.caughtUp(runner, "balances")
 *     assert.strictEqual(balances.get("account-a1"), 10)
 *   })
 * )
 * const test = program.pipe(Effect.provide(InMemory.layer))
 * ```
 * @since 0.1.0
 */
export const caughtUp = <E>(
  runner: ProjectionRunner.ProjectionRunner<E>,
  subscriptionId: string,
  timeout: Duration.DurationInput = defaultTimeout
): Effect.Effect<void, WaitError<E>> => runner.whenCaughtUp(subscriptionId, timeout)

/**
 * Waits until a projection run by the `ProjectionRunner` in context (say
 * `ProjectionRunner.layer` in the test's layer) has handled everything
 * committed so far.
 *
 * @example
 * ```ts
 * import { Aggregate, AggregateRoot, EventStore, InMemory, Projection, ProjectionRunner } from "@mire/core"
 * import { ProjectionSpec } from "@mire/core/testing"
 * import { Effect, Schema } from "effect"
 *
 * const Opened = Schema.TaggedStruct("Opened", { owner: Schema.String })
 * const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Number })
 * const Account = Aggregate.make({
 *   category: "account",
 *   events: Schema.Union(Opened, Deposited),
 *   initial: { owner: "", balance: 0 },
 *   apply: (state, event) =>
 *     event._tag === "Opened" ? { ...state, owner: event.owner } : { ...state, balance: state.balance + event.amount }
 * })
 * const balances = new Map<string, number>()
 * const Balances = Projection.atLeastOnce({
 *   subscriptionId: "balances",
 *   aggregate: Account,
 *   handle: ({ event, recorded }) =>
 *     Effect.sync(() => {
 *       if (event._tag === "Deposited") balances.set(recorded.streamId, (balances.get(recorded.streamId) ?? 0) + event.amount)
 *     })
 * })
 *
 * const program = Effect.gen(function* () {
 *   yield* EventStore.save(AggregateRoot.record(AggregateRoot.make(Account, "a1"), Deposited.make({ amount: 10 })))
 *   yield* ProjectionSpec.whenCaughtUp(Balances)
 *   assert.strictEqual(balances.get("account-a1"), 10)
 * })
 * const test = program.pipe(
 *   Effect.provide(ProjectionRunner.layer([Balances], { workerId: "test", ...ProjectionSpec.defaults })),
 *   Effect.provide(InMemory.layer)
 * )
 * ```
 * @since 0.1.0
 */
export const whenCaughtUp = (
  projection: Projection.Projection<unknown, unknown> | string,
  options: { readonly timeout?: Duration.DurationInput } = {}
): Effect.Effect<void, WaitError, ProjectionRunner.ProjectionRunner> =>
  Effect.flatMap(ProjectionRunner.ProjectionRunner, (runner) =>
    caughtUp(runner, typeof projection === "string" ? projection : projection.subscriptionId, options.timeout)
  )

/**
 * A projection running on the store in context, until its scope closes.
 *
 * @since 0.1.0
 * @category models
 */
export interface Running<E = unknown> {
  readonly subscriptionId: string
  readonly runner: ProjectionRunner.ProjectionRunner<E>
  /** The projection's status on its runner (state, lease, lag, handled, failure). */
  readonly status: Effect.Effect<ProjectionRunner.ProjectionStatus<E>, StoreError | XidAhead>
  /** Waits until it has handled everything committed so far; see {@link caughtUp}. */
  readonly whenCaughtUp: (timeout?: Duration.DurationInput) => Effect.Effect<void, WaitError<E>>
}

/**
 * Runs one projection on the store in context, in the current scope (closing
 * it stops the projection and releases its lease), with test {@link defaults}
 * and a fresh worker id unless given.
 *
 * @example
 * ```ts
 * import { Aggregate, AggregateRoot, EventStore, InMemory, Projection } from "@mire/core"
 * import { ProjectionSpec } from "@mire/core/testing"
 * import { Effect, Schema } from "effect"
 *
 * const Opened = Schema.TaggedStruct("Opened", { owner: Schema.String })
 * const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Number })
 * const Account = Aggregate.make({
 *   category: "account",
 *   events: Schema.Union(Opened, Deposited),
 *   initial: { owner: "", balance: 0 },
 *   apply: (state, event) =>
 *     event._tag === "Opened" ? { ...state, owner: event.owner } : { ...state, balance: state.balance + event.amount }
 * })
 * const balances = new Map<string, number>()
 * const Balances = Projection.atLeastOnce({
 *   subscriptionId: "balances",
 *   aggregate: Account,
 *   handle: ({ event, recorded }) =>
 *     Effect.sync(() => {
 *       if (event._tag === "Deposited") balances.set(recorded.streamId, (balances.get(recorded.streamId) ?? 0) + event.amount)
 *     })
 * })
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const running = yield* ProjectionSpec.start(Balances)
 *     yield* EventStore.save(AggregateRoot.record(AggregateRoot.make(Account, "a1"), Deposited.make({ amount: 10 })))
 *     yield* running.whenCaughtUp()
 *     assert.strictEqual(balances.get("account-a1"), 10)
 *   })
 * )
 * const test = program.pipe(Effect.provide(InMemory.layer))
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const start = <R, E = unknown>(
  projection: Projection.Projection<R, E>,
  options: Partial<ProjectionRunner.Options> = {}
): Effect.Effect<Running<E>, InvalidInput, R | Services | Scope.Scope> =>
  Effect.map(
    ProjectionRunner.run([projection], {
      ...defaults,
      workerId: `spec-${crypto.randomUUID().slice(0, 8)}`,
      ...options
    }),
    (runner): Running<E> => ({
      subscriptionId: projection.subscriptionId,
      runner,
      // The runner runs this one projection: its status is the first.
      status: Effect.map(runner.status, (all) => all[0]!),
      whenCaughtUp: (timeout) => caughtUp(runner, projection.subscriptionId, timeout)
    })
  )

/**
 * Events to append before a spec runs its projection.
 *
 * @since 0.1.0
 * @category models
 */
export type Given = Effect.Effect<void, EventStore.AppendError, EventStore.EventStore>

/**
 * Typed events of one aggregate instance, appended (encoded as the current
 * code writes them) after whatever its stream already holds.
 *
 * @example
 * ```ts
 * import { Aggregate } from "@mire/core"
 * import { ProjectionSpec } from "@mire/core/testing"
 * import { Schema } from "effect"
 *
 * const Opened = Schema.TaggedStruct("Opened", { owner: Schema.String })
 * const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Number })
 * const Account = Aggregate.make({
 *   category: "account",
 *   events: Schema.Union(Opened, Deposited),
 *   initial: { owner: "", balance: 0 },
 *   apply: (state, event) =>
 *     event._tag === "Opened" ? { ...state, owner: event.owner } : { ...state, balance: state.balance + event.amount }
 * })
 *
 * // Appends both events to `account-a1` when the spec runs.
 * const history = ProjectionSpec.stream(Account, "a1", Opened.make({ owner: "Ada" }), Deposited.make({ amount: 10 }))
 * ```
 * @since 0.1.0
 * @category givens
 */
export const stream = <S, E>(aggregate: Aggregate.Aggregate<S, E>, id: string, ...events: ReadonlyArray<NoInfer<E>>): Given =>
  Effect.gen(function* () {
    const streamId = yield* StreamId.forAggregate(aggregate.category, id)
    const encoded = yield* aggregate.codec.encodeAll(events)
    yield* EventStore.append(streamId, aggregate.category, ExpectedVersion.Any, encoded)
  })

/**
 * Events appended as-is (type, schema version, data), for instance as an
 * older version of the code wrote them.
 *
 * @example
 * ```ts
 * import { ProjectionSpec } from "@mire/core/testing"
 *
 * // An event as an older version of the code stored it.
 * const history = ProjectionSpec.stored("account-a1", "account", {
 *   eventType: "account.deposited",
 *   schemaVersion: 1,
 *   data: { amount: 5 }
 * })
 * ```
 * @since 0.1.0
 * @category givens
 */
export const stored = (streamId: string, category: string, ...events: ReadonlyArray<NewEvent>): Given =>
  Effect.asVoid(EventStore.append(streamId, category, ExpectedVersion.Any, events))

/**
 * A projection spec: the given events, ready to be read back.
 *
 * @since 0.1.0
 * @category models
 */
export interface Spec<R> {
  /**
   * Appends the given events, runs the projection until it has handled
   * them, and reads the read model.
   */
  readonly read: <A, E, R2>(
    read: Effect.Effect<A, E, R2>
  ) => Effect.Effect<A, E | WaitError | EventStore.AppendError, R | R2 | Services | EventStore.EventStore>
  /** As {@link Spec.read}, then the read model must equal `expected` (structurally). */
  readonly thenReads: <A, E, R2>(
    read: Effect.Effect<A, E, R2>,
    expected: A
  ) => Effect.Effect<A, E | SpecFailure | WaitError | EventStore.AppendError, R | R2 | Services | EventStore.EventStore>
}

/**
 * Given these events, the projection's read model reads so.
 *
 * @example
 * ```ts
 * import { Aggregate, InMemory, Projection } from "@mire/core"
 * import { ProjectionSpec } from "@mire/core/testing"
 * import { Effect, Schema } from "effect"
 *
 * const Opened = Schema.TaggedStruct("Opened", { owner: Schema.String })
 * const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Number })
 * const Account = Aggregate.make({
 *   category: "account",
 *   events: Schema.Union(Opened, Deposited),
 *   initial: { owner: "", balance: 0 },
 *   apply: (state, event) =>
 *     event._tag === "Opened" ? { ...state, owner: event.owner } : { ...state, balance: state.balance + event.amount }
 * })
 * const balances = new Map<string, number>()
 * const Balances = Projection.atLeastOnce({
 *   subscriptionId: "balances",
 *   aggregate: Account,
 *   handle: ({ event, recorded }) =>
 *     Effect.sync(() => {
 *       if (event._tag === "Deposited") balances.set(recorded.streamId, (balances.get(recorded.streamId) ?? 0) + event.amount)
 *     })
 * })
 *
 * const readBalance = (id: string) => Effect.sync(() => balances.get(`account-${id}`) ?? 0)
 *
 * const spec = ProjectionSpec.given(Balances, ProjectionSpec.stream(Account, "a1", Opened.make({ owner: "Ada" })))
 *   .thenReads(readBalance("a1"), 0)
 * const test = spec.pipe(Effect.provide(InMemory.layer))
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const given = <R>(projection: Projection.Projection<R>, ...givens: ReadonlyArray<Given>): Spec<R> => {
  const read = <A, E, R2>(read: Effect.Effect<A, E, R2>) =>
    Effect.scoped(
      Effect.gen(function* () {
        for (const g of givens) yield* g
        const running = yield* start(projection)
        yield* running.whenCaughtUp()
        return yield* read
      })
    )
  return {
    read,
    thenReads: (readModel, expected) =>
      Effect.flatMap(read(readModel), (actual) =>
        equals(actual, expected)
          ? Effect.succeed(actual)
          : Effect.fail(
              new SpecFailure({
                assertion: `thenReads: the read model of ${projection.subscriptionId}`,
                expected: show(expected),
                actual: show(actual)
              })
            )
      )
  }
}
