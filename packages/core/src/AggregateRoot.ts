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
 * const next = AggregateRoot.record(root, Deposited.make({ amount: 10 }))
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
