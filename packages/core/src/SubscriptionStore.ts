/**
 * The storage service of subscriptions: the primitives a store supplies
 * (polling behind the xmin horizon, baselines and prefixes for hold-back,
 * checkpoints, status and lag). `Subscription` builds the ordering logic
 * over them once, for every store.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import type * as Stream from "effect/Stream"
import type * as Checkpoint from "./Checkpoint.js"
import type * as Cursor from "./Cursor.js"
import type { StoreError, XidAhead } from "./EventStoreError.js"
import * as Memory from "./internal/memory/eventStore.js"
import * as MemorySubscriptionStore from "./internal/memory/subscriptionStore.js"
import type { Fence } from "./Lease.js"
import type { RecordedEvent } from "./RecordedEvent.js"
import type { Filter } from "./Subscription.js"

/**
 * How far a subscription is behind, and why.
 *
 * @since 0.1.0
 * @category models
 */
export interface Lag {
  /** Events after the checkpoint. */
  readonly events: number
  /** Age of the oldest event after the checkpoint (0 when caught up). */
  readonly ageMillis: number
  /** Age of the oldest open transaction holding back the xmin horizon (0 when none). */
  readonly oldestTransactionMillis: number
}

/**
 * What a store records of a subscription beyond its checkpoint, for status.
 *
 * @since 0.1.0
 * @category models
 */
export interface Report {
  /** The categories it reads (none: every category, or not recorded yet). */
  readonly categories: Option.Option<ReadonlyArray<string>>
  /** Why it stopped, and when (cleared by its next checkpoint or reset). */
  readonly failure: Option.Option<{ readonly message: string; readonly at: Date }>
}

/**
 * A point in the log a subscription can start from (see `locate`).
 *
 * @since 0.2.0
 * @category models
 */
export type Point = "head" | "last" | { readonly position: bigint } | { readonly time: Date }

/**
 * The storage primitives of subscriptions.
 *
 * @since 0.1.0
 * @category storage
 */
export interface SubscriptionStore {
  /** Events after `after`, older than the xmin horizon, in cursor order, at most `limit`. */
  readonly poll: (filter: Filter, after: Cursor.Cursor, limit: number) => Effect.Effect<ReadonlyArray<RecordedEvent>, StoreError>
  /** For each stream, the highest version at or below `upTo` (absent: none). */
  readonly baseline: (streamIds: ReadonlyArray<string>, upTo: Cursor.Cursor) => Effect.Effect<ReadonlyMap<string, number>, StoreError>
  /**
   * Which of these `(stream, version)` are not in the log at all (committed
   * and visible now, whatever the xmin horizon). Asked only for a version
   * whose successor is committed: an append of version n+1 takes the stream
   * row at version n, which the writer of n committed before (or in the same
   * transaction), so once n+1 is committed, n is committed too and visible in
   * every later snapshot. Its absence is then final: it was deleted.
   *
   * A version below its stream's first kept version (the stream was deleted
   * or truncated: `es_streams.truncated_before`) is returned with
   * `firstRetained`, that version: it was removed by design, and the
   * subscription moves the stream past it instead of failing.
   */
  readonly missing: (
    wanted: ReadonlyArray<{ readonly streamId: string; readonly version: number }>
  ) => Effect.Effect<
    ReadonlyArray<{ readonly streamId: string; readonly version: number; readonly firstRetained?: number | undefined }>,
    StoreError
  >
  /**
   * The lowest cursor at or below `upTo` of an event (of the filter) whose
   * stream has a lower version after `upTo` (none: no stream is inverted
   * across `upTo`). Reads the log after `upTo`: for resets, not polls.
   */
  readonly inversionBelow: (filter: Filter, upTo: Cursor.Cursor) => Effect.Effect<Option.Option<Cursor.Cursor>, StoreError>
  /**
   * For every stream (of the filter) with an event in `(after, upTo]`, the
   * highest version whose predecessors and itself are all at or below
   * `upTo` (its first version after `upTo`, minus one; absent when 0).
   */
  readonly prefixes: (
    filter: Filter,
    after: Cursor.Cursor,
    upTo: Cursor.Cursor
  ) => Effect.Effect<ReadonlyMap<string, number>, StoreError>
  /** The persisted checkpoint (none before the first is written); `XidAhead` when it or the log is ahead of the server's transaction ids (a restore into a new cluster). */
  readonly readCheckpoint: (subscriptionId: string) => Effect.Effect<Option.Option<Checkpoint.Checkpoint>, StoreError | XidAhead>
  /**
   * Persists `checkpoint` unless the subscription already has one (a row
   * made only by a lease acquisition has none), in one atomic step; returns
   * the checkpoint now persisted (the existing one, or `checkpoint`). How a
   * subscription's first start is made durable.
   */
  readonly initCheckpoint: (
    subscriptionId: string,
    checkpoint: Checkpoint.Checkpoint
  ) => Effect.Effect<Checkpoint.Checkpoint, StoreError>
  /**
   * A cursor of the log: `"head"`, the commit-safe head (the greatest
   * cursor of an event older than the xmin horizon; the start for an empty
   * log); `"last"`, the greatest cursor of a committed event, whatever the
   * horizon (none for an empty log); `{ position }`, the cursor of the first event whose global
   * position is at least `position`; `{ time }`, the lowest cursor of an
   * event recorded at or after `time`. None when there is no such event.
   */
  readonly locate: (point: Point) => Effect.Effect<Option.Option<Cursor.Cursor>, StoreError>
  /** Persists a checkpoint; with a fence, only while the lease matches. Returns whether it was written. */
  readonly writeCheckpoint: (
    subscriptionId: string,
    checkpoint: Checkpoint.Checkpoint,
    fence: Option.Option<Fence>
) => Effect.Effect<boolean, StoreError>
  /**
   * Records what the subscription reads (its categories) on its row, for
   * status; does nothing while it has no row (before its first checkpoint).
   */
  readonly describe: (subscriptionId: string, filter: Filter) => Effect.Effect<void, StoreError>
  /**
   * Records why the subscription stopped (e.g. a `MissingVersion`), for
   * status; its next checkpoint or reset clears it. Does nothing while it has
   * no row.
   */
  readonly recordFailure: (subscriptionId: string, failure: string) => Effect.Effect<void, StoreError>
  /**
   * The stored ids (a checkpoint or a lease) of `subscriptionId` itself and
   * of its shards (`subscriptionId#…`, see `Partition`), so a runner can
   * refuse to start a projection with another partition count.
   *
   * @since 0.2.0
   */
  readonly shardIds: (subscriptionId: string) => Effect.Effect<ReadonlyArray<string>, StoreError>
  /**
   * Deletes the rows (checkpoint and lease) of these subscriptions whose
   * lease is free or expired; returns the ids it left because a live lease
   * holds them. What a rebuild with a new partition count clears.
   *
   * @since 0.2.0
   */
  readonly forget: (subscriptionIds: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<string>, StoreError>
  /** What status shows of a subscription beyond its checkpoint (none: no row). */
  readonly report: (subscriptionId: string) => Effect.Effect<Option.Option<Report>, StoreError>
  /** Notifications of committed appends (categories); may miss some. */
  readonly wakeups: Stream.Stream<string, StoreError>
  readonly lag: (filter: Filter, after: Cursor.Cursor) => Effect.Effect<Lag, StoreError>
}

/**
 * The `SubscriptionStore` tag.
 *
 * @since 0.1.0
 * @category tags
 */
export const SubscriptionStore: Context.Tag<SubscriptionStore, SubscriptionStore> = Context.GenericTag<SubscriptionStore>(
  "@mire/core/SubscriptionStore"
)

/**
 * The in-memory `SubscriptionStore`, over the driver of
 * `EventStore.layerMemory` (`InMemory.layer` provides both): it polls the
 * in-memory log behind its modelled xmin horizon, as the Postgres store
 * polls behind `pg_snapshot_xmin`.
 *
 * @example
 * ```ts
 * import { Cursor, EventStore, SubscriptionStore } from "@mire/core"
 * import { Effect, Layer } from "effect"
 *
 * const layer = SubscriptionStore.layerMemory.pipe(Layer.provideMerge(EventStore.layerMemory))
 * const program = Effect.flatMap(SubscriptionStore.SubscriptionStore, (store) => store.poll({}, Cursor.start, 100))
 * const runnable = program.pipe(Effect.provide(layer))
 * ```
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<SubscriptionStore, never, Memory.Driver> = Layer.effect(
  SubscriptionStore,
  Effect.map(Memory.Driver, (driver) => MemorySubscriptionStore.make(driver))
)
