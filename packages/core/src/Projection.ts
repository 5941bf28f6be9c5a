/**
 * Projections: read models kept current from the log by a
 * {@link ProjectionRunner}.
 *
 * A projection names its subscription and what it reads (an aggregate's
 * category, decoded with that aggregate's event Schema, or a list of
 * categories as raw `RecordedEvent`s), and its handler:
 *
 * - **at-least-once**: effectively once in the happy path; after a failover
 *   the new leader resumes from the last checkpoint and may hand an event
 *   to the handler again, so handlers must be idempotent (upserts, not
 *   increments);
 * - **transactional**: the handler's `sql` runs in the same transaction as
 *   the fenced checkpoint, so a Postgres read model is exactly-once; a
 *   superseded worker's writes roll back.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import type * as Aggregate from "./Aggregate.js"
import type { EventDecodeError } from "./EventStoreError.js"
import type { RecordedEvent } from "./RecordedEvent.js"

/**
 * What a handler receives: the typed event and the stored event it came from.
 *
 * @since 0.1.0
 * @category models
 */
export interface HandledEvent<E> {
  readonly event: E
  readonly recorded: RecordedEvent
}

/**
 * A handler failed (its error is kept as `cause`).
 *
 * @since 0.1.0
 * @category errors
 */
export class HandlerFailure extends Schema.TaggedError<HandlerFailure>()("HandlerFailure", {
  cause: Schema.Defect
}) {}

/**
 * The delivery guarantee of a projection.
 *
 * @since 0.1.0
 * @category models
 */
export type Delivery = "at-least-once" | "transactional"

/**
 * A projection, its event type erased: the runner only needs to process a
 * stored event.
 *
 * @since 0.1.0
 * @category models
 */
export interface Projection<R = never> {
  readonly subscriptionId: string
  readonly categories: ReadonlyArray<string> | undefined
  readonly delivery: Delivery
  /** Decodes (upcasting) and handles one stored event. */
  readonly process: (recorded: RecordedEvent) => Effect.Effect<void, EventDecodeError | HandlerFailure, R>
}

/**
 * The options of a projection: its subscription, what it reads (an
 * aggregate's category with typed events, or categories as raw
 * `RecordedEvent`s; no categories: the whole log) and its handler.
 *
 * @since 0.1.0
 * @category models
 */
export interface Constructor {
  <S, E, Err, R>(options: {
    readonly subscriptionId: string
    readonly aggregate: Aggregate.Aggregate<S, E>
    readonly handle: (event: HandledEvent<E>) => Effect.Effect<void, Err, R>
  }): Projection<R>
  <Err, R>(options: {
    readonly subscriptionId: string
    readonly categories?: ReadonlyArray<string> | undefined
    readonly handle: (event: HandledEvent<RecordedEvent>) => Effect.Effect<void, Err, R>
  }): Projection<R>
}

const build =
  (delivery: Delivery): Constructor =>
  <E, Err, R>(options: {
    readonly subscriptionId: string
    readonly aggregate?: Aggregate.Aggregate<unknown, E>
    readonly categories?: ReadonlyArray<string> | undefined
    readonly handle: (event: HandledEvent<E | RecordedEvent>) => Effect.Effect<void, Err, R>
  }): Projection<R> => {
    const aggregate = options.aggregate
    // A handler that throws or dies fails like one that fails: retried, then the projection stops.
    const handle = (event: E | RecordedEvent, recorded: RecordedEvent) =>
      Effect.suspend(() => options.handle({ event, recorded })).pipe(
        Effect.mapError((cause) => new HandlerFailure({ cause })),
        Effect.catchAllDefect((cause) => Effect.fail(new HandlerFailure({ cause })))
      )
    return {
      subscriptionId: options.subscriptionId,
      categories: aggregate === undefined ? options.categories : [aggregate.category],
      delivery,
      // The decode is one synchronous call per event (a catch-up runs this for every event it reads).
      process:
        aggregate === undefined
          ? (recorded) => handle(recorded, recorded)
          : (recorded) =>
              Effect.suspend((): Effect.Effect<void, EventDecodeError | HandlerFailure, R> => {
                const decoded = aggregate.codec.decodeEither(recorded)
                return Either.isLeft(decoded) ? Effect.fail(decoded.left) : handle(decoded.right, recorded)
              })
    }
  }

/**
 * An at-least-once projection. Its handler must be idempotent.
 *
 * @example
 * Projection.atLeastOnce({
 *   subscriptionId: "balances",
 *   aggregate: Account,
 *   handle: ({ event, recorded }) => upsertBalance(recorded.streamId, event)
 * })
 * @since 0.1.0
 * @category constructors
 */
export const atLeastOnce = build("at-least-once")

/**
 * A transactional projection: the handler's `sql` commits with the fenced
 * checkpoint, exactly once.
 *
 * @example
 * Projection.transactional({
 *   subscriptionId: "order-totals",
 *   aggregate: Order,
 *   handle: ({ event }) => sql`UPDATE totals SET amount = amount + ${event.amount}`
 * })
 * @since 0.1.0
 * @category constructors
 */
export const transactional = build("transactional")
