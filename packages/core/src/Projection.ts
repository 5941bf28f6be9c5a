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
import * as EventStore from "./EventStore.js"
import type { EventDecodeError } from "./EventStoreError.js"
import type * as Partition from "./Partition.js"
import type { RecordedEvent } from "./RecordedEvent.js"
import type * as Subscription from "./Subscription.js"

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
 * What the runner does with an event whose handler still fails after its
 * retries (or that cannot be decoded):
 *
 * - `"stop"` (the default): the projection stops with `ProjectionFailed`
 *   naming the event; its checkpoint stays before it;
 * - `"skip"`: the event goes to the dead letters (`DeadLetters`) with its
 *   error and attempts, and the projection moves on. The later events of
 *   the same stream are parked behind it (dead letters too), so no stream is
 *   ever handled out of order; every other stream goes on. A `retry` of the
 *   dead letter redelivers it, then the parked events, in order.
 *
 * @since 0.2.0
 * @category models
 */
export type OnFailure = "stop" | "skip"

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
   * Shards it runs as (see `Partition`; none or 1: one subscription under
   * its own id).
   */
  readonly partitions?: number | undefined
  /** On one shard of a partitioned projection (see `Partition.units`): which. */
  readonly shard?: Partition.Unit | undefined
  /** What the runner does with an event that keeps failing (none: `"stop"`); see {@link OnFailure}. */
  readonly onFailure?: OnFailure | undefined
  /** Where it starts without a checkpoint (none: `"start"`); see `Subscription.StartFrom`. */
  readonly startFrom?: Subscription.StartFrom | undefined
  /**
   * Decodes (upcasting) one stored event, synchronously, and returns its
   * handler's effect, or why the event cannot be decoded. The effect fails
   * with the handler's error or dies as the handler did: the runner
   * classifies failures once per batch, not per event.
   */
  readonly process: (recorded: RecordedEvent) => Either.Either<Effect.Effect<void, E, R>, EventDecodeError>
}

/**
 * What every projection takes besides what it reads and its handler: its
 * subscription, partitions, failure policy, start, and the tombstone hook.
 *
 * @since 0.2.0
 * @category models
 */
export interface Options<Err, R> {
  readonly subscriptionId: string
  /** Shards to run as, 1-1024, split by stream (see `Partition`). */
  readonly partitions?: number | undefined
  /** What to do with an event that keeps failing (default `"stop"`; see {@link OnFailure}). */
  readonly onFailure?: OnFailure | undefined
  /** Where it starts without a checkpoint (default `"start"`; see `Subscription.StartFrom`). */
  readonly startFrom?: Subscription.StartFrom | undefined
  /** Called for a deleted stream's tombstone (see {@link StreamDeletedNotice}); none: skipped. */
  readonly onStreamDeleted?: ((deleted: StreamDeletedNotice) => Effect.Effect<void, Err, R>) | undefined
}

/**
 * The projection constructors: what it reads (an aggregate's category with
 * typed events, or categories as raw `RecordedEvent`s; no categories: the
 * whole log) and its handler, besides the common {@link Options}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Constructor {
  <S, E, Err, R>(
    options: Options<Err, R> & {
      readonly aggregate: Aggregate.Aggregate<S, E>
      readonly handle: (event: HandledEvent<E>) => Effect.Effect<void, Err, R>
    }
  ): Projection<R, Err>
  <Err, R>(
    options: Options<Err, R> & {
      readonly categories?: ReadonlyArray<string> | undefined
      readonly handle: (event: HandledEvent<RecordedEvent>) => Effect.Effect<void, Err, R>
    }
  ): Projection<R, Err>
}

const build =
  (delivery: Delivery): Constructor =>
  <E, Err, R>(
    options: Options<Err, R> & {
      readonly aggregate?: Aggregate.Aggregate<unknown, E>
      readonly categories?: ReadonlyArray<string> | undefined
      readonly handle: (event: HandledEvent<E | RecordedEvent>) => Effect.Effect<void, Err, R>
    }
  ): Projection<R, Err> => {
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
      ...(options.partitions === undefined ? {} : { partitions: options.partitions }),
      ...(options.onFailure === undefined ? {} : { onFailure: options.onFailure }),
      ...(options.startFrom === undefined ? {} : { startFrom: options.startFrom }),
      // The decode is one synchronous call per event (a catch-up runs this for every event it reads).
      // A system event (mire's own `$StreamDeleted`) never reaches `handle` (an aggregate's codec cannot decode
      // it); another `$…` type stored before 0.2 reserved `$` is a user event and is handled as before.
      process:
        aggregate === undefined
          ? (recorded) =>
              Either.right(
                recorded.eventType === EventStore.streamDeletedType ? system(recorded, options.onStreamDeleted) : handle(recorded, recorded)
              )
          : (recorded) =>
              recorded.eventType === EventStore.streamDeletedType
                ? Either.right(system(recorded, options.onStreamDeleted))
                : Either.map(aggregate.codec.decodeEither(recorded), (event) => handle(event, recorded))
    }
  }

/**
 * What a projection's `onStreamDeleted` receives: the deleted stream, the
 * last version it had (every event up to it is gone), and the tombstone
 * event. A read model drops the stream's rows. Delivered in the stream's
 * order, after every event of it the projection was handed, at least once
 * (idempotent handlers) or exactly once (transactional).
 *
 * @since 0.2.0
 * @category models
 */
export interface StreamDeletedNotice {
  readonly streamId: string
  readonly deletedVersion: number
  readonly recorded: RecordedEvent
}

/** A system event's effect (a tombstone): `onStreamDeleted` when given, else skipped. */
const system = <Err, R>(
  recorded: RecordedEvent,
  onStreamDeleted: ((deleted: StreamDeletedNotice) => Effect.Effect<void, Err, R>) | undefined
): Effect.Effect<void, Err, R> => {
  if (onStreamDeleted === undefined || recorded.eventType !== "$StreamDeleted") return Effect.void
  const version = recorded.data.deletedVersion
  const notice: StreamDeletedNotice = {
    streamId: recorded.streamId,
    deletedVersion: typeof version === "number" ? version : recorded.streamVersion - 1,
    recorded
  }
  try {
    return onStreamDeleted(notice)
  } catch (defect) {
    return Effect.die(defect)
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
