/**
 * An aggregate: a category of streams, its Schema-typed events and a pure
 * fold `(state, event) => state`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import type * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as EventCodec from "./EventCodec.js"
import { type EventDecodeError, StreamCorrupt } from "./EventStoreError.js"
import type { RecordedEvent } from "./RecordedEvent.js"

/**
 * Opt-in snapshots: the state's Schema, a snapshot version (bump it when the
 * state's shape changes; older snapshots are then ignored) and how often to
 * write one.
 *
 * @example
 * ```ts
 * import { Aggregate } from "@mire/core"
 * import { Schema } from "effect"
 *
 * const Opened = Schema.TaggedStruct("Opened", { owner: Schema.String })
 * const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Number })
 * const AccountState = Schema.Struct({ owner: Schema.String, balance: Schema.Number })
 *
 * // A snapshot of the state every 100 events; bump `version` when the state's shape changes.
 * const Account = Aggregate.make({
 *   category: "account",
 *   events: Schema.Union(Opened, Deposited),
 *   initial: { owner: "", balance: 0 },
 *   apply: (state, event) =>
 *     event._tag === "Opened" ? { ...state, owner: event.owner } : { ...state, balance: state.balance + event.amount },
 *   snapshot: { schema: AccountState, version: 1, every: 100 }
 * })
 * ```
 * @since 0.1.0
 * @category models
 */
export interface SnapshotDefinition<S> {
  readonly version: number
  /** Write a snapshot when the saved version crossed a multiple of `every`. */
  readonly every: number
  readonly decode: (stored: unknown) => Effect.Effect<S, ParseResult.ParseError>
  readonly encode: (state: S) => Effect.Effect<unknown, ParseResult.ParseError>
}

/**
 * Snapshot options as given to {@link make}: the state's Schema, the
 * snapshot version and the policy.
 *
 * @since 0.1.0
 * @category models
 */
export interface SnapshotOptions<S, I> {
  readonly schema: Schema.Schema<S, I>
  readonly version: number
  readonly every: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Aggregate<S, E> {
  readonly category: string
  readonly codec: EventCodec.EventCodec<E>
  readonly initial: S
  readonly apply: (state: S, event: E) => S
  readonly snapshot: Option.Option<SnapshotDefinition<S>>
}

/**
 * Defines an aggregate.
 *
 * @example
 * ```ts
 * import { Aggregate } from "@mire/core"
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
 * assert.strictEqual(Account.category, "account")
 * assert.deepStrictEqual(Account.apply(Account.initial, Opened.make({ owner: "Ada" })), { owner: "Ada", balance: 0 })
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const make = <U extends EventCodec.EventUnion, S, SI = S>(options: {
  readonly category: string
  readonly events: U
  readonly initial: S
  readonly apply: (state: S, event: Schema.Schema.Type<U>) => S
  readonly definitions?: { readonly [tag: string]: EventCodec.EventDefinition }
  readonly snapshot?: SnapshotOptions<S, SI>
}): Aggregate<S, Schema.Schema.Type<U>> => ({
  category: options.category,
  codec: EventCodec.make(options.category, options.events, options.definitions),
  initial: options.initial,
  apply: options.apply,
  snapshot: Option.map(Option.fromNullable(options.snapshot), (snapshot) => ({
    version: snapshot.version,
    every: snapshot.every,
    decode: Schema.decodeUnknown(snapshot.schema),
    encode: Schema.encode(snapshot.schema)
  }))
})

/**
 * Folds events into a state, purely.
 *
 * @since 0.1.0
 */
export const fold = <S, E>(aggregate: Aggregate<S, E>, state: S, events: Iterable<E>): S => {
  let current = state
  for (const event of events) current = aggregate.apply(current, event)
  return current
}

/**
 * A fold in progress over stored events: the state and the last version.
 *
 * @since 0.1.0
 * @category models
 */
export interface Folded<S> {
  readonly state: S
  readonly version: number
}

const outOfOrder = (recorded: EventCodec.Decodable, expected: number): StreamCorrupt =>
  new StreamCorrupt({ streamId: recorded.streamId, expectedVersion: expected, foundVersion: recorded.streamVersion })

/**
 * Folds one stored event into a state, after checking it is the next version
 * of its stream and decoding (and upcasting) it.
 *
 * @since 0.1.0
 */
export const applyRecorded =
  <S, E>(aggregate: Aggregate<S, E>) =>
  (acc: Folded<S>, recorded: RecordedEvent): Effect.Effect<Folded<S>, EventDecodeError | StreamCorrupt> =>
    Effect.suspend(() => foldRecorded(aggregate, acc, [recorded]))

/**
 * Folds stored events into a state in one synchronous loop, checking each
 * is the next version of its stream and decoding (and upcasting) it: the
 * first problem, or the new state and version. Every load goes through it.
 * It reads only what decoding reads (a `RecordedEvent` has it all), so a
 * store can load just those columns.
 *
 * @since 0.1.0
 */
export const foldRecorded = <S, E>(
  aggregate: Aggregate<S, E>,
  start: Folded<S>,
  events: ReadonlyArray<EventCodec.Decodable>
): Either.Either<Folded<S>, EventDecodeError | StreamCorrupt> => {
  let state = start.state
  let version = start.version
  for (let i = 0; i < events.length; i++) {
    const recorded = events[i]!
    if (recorded.streamVersion !== version + 1) return Either.left(outOfOrder(recorded, version + 1))
    const event = aggregate.codec.decodeEither(recorded)
    if (Either.isLeft(event)) return Either.left(event.left)
    state = aggregate.apply(state, event.right)
    version = recorded.streamVersion
  }
  return Either.right({ state, version })
}
