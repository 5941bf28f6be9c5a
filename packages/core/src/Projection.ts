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
 * The delivery guarantee of a projection.
 *
 * @since 0.1.0
 * @category models
 */
export type Delivery = "at-least-once" | "transactional"

/**
 * A projection, its event type erased: the runner only needs to turn a
 * stored event into its handler's effect. `E` is the handler's own error,
 * kept typed up to `ProjectionRunner.ProjectionFailed`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Projection<R = never, E = unknown> {
  readonly subscriptionId: string
  readonly categories: ReadonlyArray<string> | undefined
  readonly delivery: Delivery
  /**
   * Decodes (upcasting) one stored event, synchronously, and returns its
   * handler's effect, or why the event cannot be decoded. The effect fails
   * with the handler's error or dies as the handler did: the runner
   * classifies failures once per batch, not per event.
   */
  readonly process: (recorded: RecordedEvent) => Either.Either<Effect.Effect<void, E, R>, EventDecodeError>
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
  }): Projection<R, Err>
  <Err, R>(options: {
    readonly subscriptionId: string
    readonly categories?: ReadonlyArray<string> | undefined
    readonly handle: (event: HandledEvent<RecordedEvent>) => Effect.Effect<void, Err, R>
  }): Projection<R, Err>
}

const build =
  (delivery: Delivery): Constructor =>
  <E, Err, R>(options: {
    readonly subscriptionId: string
    readonly aggregate?: Aggregate.Aggregate<unknown, E>
    readonly categories?: ReadonlyArray<string> | undefined
    readonly handle: (event: HandledEvent<E | RecordedEvent>) => Effect.Effect<void, Err, R>
  }): Projection<R, Err> => {
    const aggregate = options.aggregate
    // A handler that throws before returning its effect dies like one whose effect dies: retried, then
    // the projection stops. Caught here, without an Effect frame per event.
    const handle = (event: E | RecordedEvent, recorded: RecordedEvent): Effect.Effect<void, Err, R> => {
      try {
        return options.handle({ event, recorded })
      } catch (defect) {
        return Effect.die(defect)
      }
    }
    return {
      subscriptionId: options.subscriptionId,
      categories: aggregate === undefined ? options.categories : [aggregate.category],
      delivery,
      // The decode is one synchronous call per event (a catch-up runs this for every event it reads).
      process:
        aggregate === undefined
          ? (recorded) => Either.right(handle(recorded, recorded))
          : (recorded) => Either.map(aggregate.codec.decodeEither(recorded), (event) => handle(event, recorded))
    }
  }

/**
 * An at-least-once projection. Its handler must be idempotent.
 *
 * @example
 * ```ts
 * import { Aggregate, Projection } from "@mire/core"
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
 * const balances = new Map<string, number>()
 *
 * // Setting (not adding) the balance read from the event's stream position keeps a redelivery harmless.
 * const Balances = Projection.atLeastOnce({
 *   subscriptionId: "balances",
 *   aggregate: Account,
 *   handle: ({ event, recorded }) =>
 *     Effect.sync(() => {
 *       if (event._tag === "Deposited") balances.set(recorded.streamId, (balances.get(recorded.streamId) ?? 0) + event.amount)
 *     })
 * })
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const atLeastOnce = build("at-least-once")

/**
 * A transactional projection: the handler's `sql` commits with the fenced
 * checkpoint, exactly once.
 *
 * @example
 * ```ts
 * import { SqlClient } from "@effect/sql"
 * import { Aggregate, Projection } from "@mire/core"
 * import { Effect, Schema } from "effect"
 *
 * const Placed = Schema.TaggedStruct("Placed", { amount: Schema.Number })
 * const Order = Aggregate.make({ category: "order", events: Placed, initial: { amount: 0 }, apply: (_, event) => event })
 *
 * // The UPDATE and the checkpoint commit in one transaction: each event counts exactly once.
 * const OrderTotals = Projection.transactional({
 *   subscriptionId: "order-totals",
 *   aggregate: Order,
 *   handle: ({ event }) =>
 *     Effect.flatMap(SqlClient.SqlClient, (sql) => Effect.asVoid(sql`UPDATE totals SET amount = amount + ${event.amount}`))
 * })
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const transactional = build("transactional")
