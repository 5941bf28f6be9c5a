/**
 * Given/When/Then for aggregates and command functions, pure and
 * store-free: given past events, when a command runs, then these new
 * events, or this typed error, or nothing.
 *
 * A command is any function of the state (and the root) that decides: it
 * returns the new events (one, several or none), a root with events
 * recorded by `AggregateRoot.record`, or an `Effect` of either that may
 * fail with a typed domain error.
 *
 * ```ts
 * it.effect("no overdraft", () =>
 *   AggregateSpec.given(Account, Opened.make({ owner: "Ada" }), Deposited.make({ amount: 10 }))
 *     .when((state) => withdraw(state, 50))
 *     .thenFails(new InsufficientFunds({ balance: 10, requested: 50 })))
 * ```
 *
 * Expected events are compared in their stored form (type, schema version
 * and encoded data), so every new event must also pass its Schema, as the
 * store would require on save.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Aggregate from "../Aggregate.js"
import * as AggregateRoot from "../AggregateRoot.js"
import type { EventDecodeError } from "../EventStoreError.js"
import type { NewEvent, RecordedEvent } from "../RecordedEvent.js"
import * as StreamId from "../StreamId.js"
import { equals, SpecFailure, show } from "./SpecFailure.js"

/**
 * What a command decides: new events (one, several or none), or a root
 * with the new events recorded (its `pending`).
 *
 * @since 0.1.0
 * @category models
 */
// biome-ignore lint/suspicious/noConfusingVoidType: a command may decide nothing (return nothing, or `Effect.void`)
export type Decision<S, E> = E | ReadonlyArray<E> | AggregateRoot.AggregateRoot<S, E> | void

/**
 * A command under test: decides from the state (and the root, for
 * commands written against `AggregateRoot`), purely or as an `Effect`.
 *
 * @since 0.1.0
 * @category models
 */
export type Command<S, E, Err, R> = (
  state: S,
  root: AggregateRoot.AggregateRoot<S, E>
) => Decision<S, E> | Effect.Effect<Decision<S, E>, Err, R>

/**
 * A command that succeeded: its new events and the state and version after
 * them.
 *
 * @since 0.1.0
 * @category models
 */
export interface Outcome<S, E> {
  readonly events: ReadonlyArray<E>
  readonly state: S
  readonly version: number
}

/**
 * A command about to run, with the expectations that run it.
 *
 * @since 0.1.0
 * @category models
 */
export interface When<S, E, Err, R, GE> {
  /** Runs the command: its outcome, or its typed error. */
  readonly outcome: Effect.Effect<Either.Either<Outcome<S, E>, Err>, SpecFailure | GE, R>
  /** The command succeeds with exactly these new events, in order. */
  readonly thenEvents: (...events: ReadonlyArray<E>) => Effect.Effect<Outcome<S, E>, SpecFailure | GE, R>
  /** The command succeeds and records nothing. */
  readonly thenNothing: () => Effect.Effect<Outcome<S, E>, SpecFailure | GE, R>
  /**
   * The command fails with this error (compared structurally), or with an
   * error satisfying the predicate.
   */
  readonly thenFails: (expected: Err | ((error: Err) => boolean)) => Effect.Effect<Err, SpecFailure | GE, R>
}

/**
 * Past events, folded: the state a command will see.
 *
 * @since 0.1.0
 * @category models
 */
export interface Given<S, E, GE = never> {
  readonly aggregate: Aggregate.Aggregate<S, E>
  /** The root a command sees: id `spec`, the given events folded, at their version. */
  readonly root: Effect.Effect<AggregateRoot.AggregateRoot<S, E>, SpecFailure | GE>
  /** The command to run. */
  readonly when: <Err = never, R = never>(command: Command<S, E, Err, R>) => When<S, E, Err, R, GE>
}

/**
 * An event as stored: its type, schema version and data.
 *
 * @since 0.1.0
 * @category models
 */
export type StoredEvent = Pick<NewEvent, "eventType" | "schemaVersion" | "data">

/** The id of the aggregate a spec runs against. */
const specId = "spec"

/** A stored event at version `i + 1` of the spec's stream. */
const toRecorded = (category: string, event: StoredEvent, i: number): RecordedEvent => ({
  eventId: `00000000-0000-4000-8000-${(i + 1).toString(16).padStart(12, "0")}`,
  // The given events play the stream's stored history, so their ids are branded as a store's are.
  streamId: StreamId.fromStored(StreamId.make(category, specId)),
  category: StreamId.categoryFromStored(category),
  aggregateId: specId,
  streamVersion: i + 1,
  globalPosition: BigInt(i + 1),
  transactionId: 1n,
  eventType: event.eventType,
  schemaVersion: event.schemaVersion,
  data: event.data,
  metadata: {},
  recordedAt: new Date(0)
})

const isRoot = <S, E>(u: unknown): u is AggregateRoot.AggregateRoot<S, E> =>
  typeof u === "object" && u !== null && "aggregate" in u && "pending" in u && Array.isArray(u.pending)

/** The events a decision holds (a root's are taken apart, as only its new ones count). */
const eventsOf = <E>(decision: unknown): ReadonlyArray<E> =>
  decision === undefined ? [] : Array.isArray(decision) ? (decision as ReadonlyArray<E>) : [decision as E]

/** The stored form of events, for comparison: the writer's view. */
const storedForm = <S, E>(aggregate: Aggregate.Aggregate<S, E>, events: ReadonlyArray<E>, which: string) =>
  aggregate.codec.encodeAll(events).pipe(
    Effect.map((encoded) => encoded.map((e) => ({ type: e.eventType, version: e.schemaVersion, data: e.data }))),
    Effect.mapError(
      (error) =>
        new SpecFailure({
          assertion: `${which}: every event passes its Schema`,
          expected: "events the store would accept",
          actual: `${show(events)} (${error.reason})`
        })
    )
  )

const makeGiven = <S, E, GE>(
  aggregate: Aggregate.Aggregate<S, E>,
  root: Effect.Effect<AggregateRoot.AggregateRoot<S, E>, SpecFailure | GE>
): Given<S, E, GE> => ({
  aggregate,
  root,
  when: <Err, R>(command: Command<S, E, Err, R>): When<S, E, Err, R, GE> => {
    const outcome: Effect.Effect<Either.Either<Outcome<S, E>, Err>, SpecFailure | GE, R> = Effect.flatMap(
      root,
      (before) =>
        Effect.suspend(() => {
          const decided = command(before.state, before)
          return Effect.isEffect(decided) ? decided : Effect.succeed(decided)
        }).pipe(
          Effect.map((decision) => {
            const events = isRoot<S, E>(decision)
              ? decision.pending.slice(before.pending.length)
              : eventsOf<E>(decision)
            return {
              events,
              state: Aggregate.fold(aggregate, before.state, events),
              version: before.version + events.length
            }
          }),
          Effect.either
        )
    )

    const succeeded = (assertion: string) =>
      Effect.flatMap(outcome, (result) =>
        Either.isRight(result)
          ? Effect.succeed(result.right)
          : Effect.fail(new SpecFailure({ assertion, expected: "the command succeeds", actual: `it failed with ${show(result.left)}` }))
      )

    const thenEvents = (...expected: ReadonlyArray<E>) =>
      Effect.gen(function* () {
        const result = yield* succeeded("thenEvents: the command succeeds")
        const want = yield* storedForm(aggregate, expected, "thenEvents (expected)")
        const got = yield* storedForm(aggregate, result.events, "thenEvents (new events)")
        if (!equals(got, want)) {
          return yield* new SpecFailure({
            assertion: "thenEvents: the new events",
            expected: show(expected),
            actual: show(result.events)
          })
        }
        return result
      })

    const thenNothing = () =>
      Effect.flatMap(succeeded("thenNothing: the command succeeds"), (result) =>
        result.events.length === 0
          ? Effect.succeed(result)
          : Effect.fail(new SpecFailure({ assertion: "thenNothing: no new events", expected: "[]", actual: show(result.events) }))
      )

    const thenFails = (expected: Err | ((error: Err) => boolean)) =>
      Effect.flatMap(outcome, (result) => {
        if (Either.isRight(result)) {
          return Effect.fail(
            new SpecFailure({
              assertion: "thenFails: the command fails",
              expected: typeof expected === "function" ? "an error satisfying the predicate" : show(expected),
              actual: `it succeeded with ${show(result.right.events)}`
            })
          )
        }
        const error = result.left
        const matches =
          typeof expected === "function" ? (expected as (error: Err) => boolean)(error) : equals(error, expected)
        return matches
          ? Effect.succeed(error)
          : Effect.fail(
              new SpecFailure({
                assertion: "thenFails: the error",
                expected: typeof expected === "function" ? "an error satisfying the predicate" : show(expected),
                actual: show(error)
              })
            )
      })

    return { outcome, thenEvents, thenNothing, thenFails }
  }
})

/**
 * Given these past events of an aggregate (none: a new aggregate). Each
 * must pass its Schema, as it would have to be stored.
 *
 * @example
 * ```ts
 * import { Aggregate } from "@mire/core"
 * import { AggregateSpec } from "@mire/core/testing"
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
 *
 * const deposit = (state: { readonly owner: string }, amount: number) =>
 *   state.owner === "" ? [] : Deposited.make({ amount })
 *
 * const spec = AggregateSpec.given(Account, Opened.make({ owner: "Ada" }))
 *   .when((state) => deposit(state, 10))
 *   .thenEvents(Deposited.make({ amount: 10 }))
 * Effect.runPromise(spec)
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const given = <S, E>(aggregate: Aggregate.Aggregate<S, E>, ...events: ReadonlyArray<NoInfer<E>>): Given<S, E> =>
  makeGiven<S, E, never>(
    aggregate,
    Effect.as(
      storedForm(aggregate, events, "given"),
      AggregateRoot.make(aggregate, specId, Aggregate.fold(aggregate, aggregate.initial, events), events.length)
    )
  )

/**
 * Given stored events as an older version of the code wrote them (type,
 * schema version, data): each is upcast and decoded through the aggregate's
 * codec, as every reader does, then folded. A row that cannot be read fails
 * the spec with the `EventDecodeError` naming it.
 *
 * @example
 * ```ts
 * import { Aggregate } from "@mire/core"
 * import { AggregateSpec } from "@mire/core/testing"
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
 *
 * // The history as stored rows: decoded (and upcast) as a load would.
 * const spec = AggregateSpec.givenStored(Account, { eventType: "account.deposited", schemaVersion: 1, data: { amount: 5 } })
 *   .when((state) => Deposited.make({ amount: state.balance }))
 *   .thenEvents(Deposited.make({ amount: 5 }))
 * Effect.runPromise(spec)
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const givenStored = <S, E>(
  aggregate: Aggregate.Aggregate<S, E>,
  ...stored: ReadonlyArray<StoredEvent>
): Given<S, E, EventDecodeError> =>
  makeGiven(
    aggregate,
    Effect.reduce(
      stored.map((event, i) => toRecorded(aggregate.category, event, i)),
      { state: aggregate.initial, version: 0 },
      Aggregate.applyRecorded(aggregate)
    ).pipe(
      // Versions are 1..n by construction: a StreamCorrupt cannot happen.
      Effect.catchTag("StreamCorrupt", (e) => Effect.die(e)),
      Effect.map((folded) => AggregateRoot.make(aggregate, specId, folded.state, folded.version))
    )
  )

/**
 * Upcasts and decodes stored events through an aggregate's codec, purely:
 * what a load would fold, for asserting an upcaster chain directly.
 *
 * @example
 * ```ts
 * import { Aggregate } from "@mire/core"
 * import { AggregateSpec } from "@mire/core/testing"
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
 *
 * const program = Effect.gen(function* () {
 *   const [event] = yield* AggregateSpec.upcast(Account, { eventType: "account.deposited", schemaVersion: 1, data: { amount: 5 } })
 *   assert.deepStrictEqual(event, Deposited.make({ amount: 5 }))
 * })
 * Effect.runPromise(program)
 * ```
 * @since 0.1.0
 */
export const upcast = <S, E>(
  aggregate: Aggregate.Aggregate<S, E>,
  ...stored: ReadonlyArray<StoredEvent>
): Effect.Effect<ReadonlyArray<E>, EventDecodeError> =>
  Effect.forEach(stored, (event, i) => aggregate.codec.decode(toRecorded(aggregate.category, event, i)))
