/**
 * An immutable aggregate instance: its id, state, version and the events
 * recorded but not yet saved.
 *
 * @since 0.1.0
 */
import type { Aggregate } from "./Aggregate.js"
import * as StreamId from "./StreamId.js"
import type { EventMetadata } from "./RecordedEvent.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface AggregateRoot<S, E> {
  readonly aggregate: Aggregate<S, E>
  readonly id: string
  readonly streamId: string
  readonly state: S
  /** The stream version the state reflects, before `pending`. */
  readonly version: number
  /** Recorded, not yet saved. */
  readonly pending: ReadonlyArray<E>
  /** Metadata given to every pending event when saved. */
  readonly metadata: EventMetadata
}

/**
 * A new root at version 0 with the aggregate's initial state.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <S, E>(aggregate: Aggregate<S, E>, id: string, state = aggregate.initial, version = 0): AggregateRoot<S, E> => ({
  aggregate,
  id,
  streamId: StreamId.make(aggregate.category, id),
  state,
  version,
  pending: [],
  metadata: {}
})

/**
 * Records events: returns a new root with them folded into `state` and
 * queued in `pending`. The root passed in is unchanged.
 *
 * @example
 * ```ts
 * import { Aggregate, AggregateRoot } from "@mire/core"
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
 * const root = AggregateRoot.make(Account, "42")
 * const next = AggregateRoot.record(root, Opened.make({ owner: "Ada" }), Deposited.make({ amount: 10 }))
 * assert.deepStrictEqual(next.state, { owner: "Ada", balance: 10 })
 * assert.strictEqual(next.pending.length, 2)
 * assert.strictEqual(root.pending.length, 0)
 * ```
 * @since 0.1.0
 */
export const record = <S, E>(root: AggregateRoot<S, E>, ...events: ReadonlyArray<E>): AggregateRoot<S, E> => {
  let state = root.state
  for (const event of events) state = root.aggregate.apply(state, event)
  return { ...root, state, pending: [...root.pending, ...events] }
}

/**
 * Sets the metadata (correlation, causation, custom JSON) that the pending
 * events are saved with.
 *
 * @since 0.1.0
 */
export const withMetadata = <S, E>(root: AggregateRoot<S, E>, metadata: EventMetadata): AggregateRoot<S, E> => ({
  ...root,
  metadata
})

/**
 * The version the stream will have once `pending` is saved.
 *
 * @since 0.1.0
 */
export const nextVersion = <S, E>(root: AggregateRoot<S, E>): number => root.version + root.pending.length
