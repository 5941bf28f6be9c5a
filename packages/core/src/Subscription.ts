/**
 * Subscriptions: a resumable cursor over the whole log, one category or a
 * list of categories, delivering commit-safe and in per-stream order.
 *
 * - **xmin guard**: a poll returns only events of transactions older than
 *   the oldest one still open, so nothing can commit behind the cursor.
 * - **Per-stream order**: see {@link HoldBack}; the persisted checkpoint
 *   never moves past a held event.
 * - **Backstop**: a regression fails the poll with `OrderingViolation`.
 * - **Wake-ups**: appends notify; a waiting subscription polls at once, and
 *   polls every `pollInterval` anyway (a missed notification only delays).
 *
 * A store supplies the {@link SubscriptionStore} primitives; the logic is
 * here, once.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Cursor from "./Cursor.js"
import { InvalidInput, type OrderingViolation, type StoreError } from "./EventStoreError.js"
import * as HoldBack from "./HoldBack.js"
import * as Metrics from "./Metrics.js"
import type { RecordedEvent } from "./RecordedEvent.js"
import * as StreamId from "./StreamId.js"

/**
 * What a subscription reads: every category, or some.
 *
 * @since 0.1.0
 * @category models
 */
export interface Filter {
  readonly categories?: ReadonlyArray<string> | undefined
}

/**
 * A checkpoint at a cursor, with nothing delivered past it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const checkpointAt = (cursor: Cursor.Cursor): HoldBack.Checkpoint => ({ cursor, delivered: new Map() })

/**
 * A fencing condition for a checkpoint write: it commits only while the
 * lease is held by `workerId` with `fenceToken`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Fence {
  readonly workerId: string
  readonly fenceToken: bigint
}

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
  readonly readCheckpoint: (subscriptionId: string) => Effect.Effect<Option.Option<HoldBack.Checkpoint>, StoreError>
  /** Persists a checkpoint; with a fence, only while the lease matches. Returns whether it was written. */
  readonly writeCheckpoint: (
    subscriptionId: string,
    checkpoint: HoldBack.Checkpoint,
    fence: Option.Option<Fence>
) => Effect.Effect<boolean, StoreError>
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
export class SubscriptionStoreTag extends Context.Tag("@mire/core/SubscriptionStore")<
  SubscriptionStoreTag,
  SubscriptionStore
>() {}

/**
 * Options of a subscription.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends Filter {
  readonly subscriptionId: string
  /** Events per poll (default 100). */
  readonly batchSize?: number
  /** Longest wait between polls without a notification (default 1 s). */
  readonly pollInterval?: Duration.DurationInput
}

/**
 * A live subscription.
 *
 * @since 0.1.0
 * @category models
 */
export interface Subscription {
  readonly subscriptionId: string
  /** One poll: the events it makes deliverable (possibly none). */
  readonly poll: Effect.Effect<ReadonlyArray<RecordedEvent>, OrderingViolation | StoreError>
  /** Persists the safe cursor (never past a held event); with a fence, only while it holds. */
  readonly checkpoint: (fence?: Fence) => Effect.Effect<boolean, StoreError>
  /** Replays from the start, or from `cursor`; at-least-once, and the backstop forgets what was delivered. */
  readonly reset: (cursor?: Cursor.Cursor) => Effect.Effect<void, StoreError>
  /** The read cursor and the cursor a checkpoint would persist. */
  readonly position: Effect.Effect<{
    readonly read: Cursor.Cursor
    readonly safe: Cursor.Cursor
    readonly held: number
    /** What a checkpoint now would persist. */
    readonly checkpoint: HoldBack.Checkpoint
  }>
  /** Waits for a wake-up (a notification or the poll interval). */
  readonly awaitWakeup: Effect.Effect<void>
  readonly lag: Effect.Effect<Lag, StoreError>
  /**
   * Every deliverable batch, polling again at once after a full batch and
   * otherwise on a notification or the poll interval. Runs until interrupted.
   */
  readonly batches: Stream.Stream<ReadonlyArray<RecordedEvent>, OrderingViolation | StoreError>
}

interface Internal {
  readonly read: Cursor.Cursor
  readonly start: Cursor.Cursor
  readonly ordering: HoldBack.State
}

/**
 * Opens a subscription at its persisted checkpoint (or the start). Its
 * wake-up listener lives in the enclosing scope.
 *
 * @example
 * const sub = yield* Subscription.make({ subscriptionId: "balances", categories: ["account"] })
 * const events = yield* sub.poll
 * yield* sub.checkpoint()
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<Subscription, StoreError | InvalidInput, SubscriptionStoreTag | Scope.Scope> =>
  Effect.gen(function* () {
    const store = yield* SubscriptionStoreTag
    const subscriptionId = options.subscriptionId
    if (subscriptionId.length === 0 || subscriptionId.length > 255) {
      return yield* new InvalidInput({ field: "subscriptionId", reason: "must be 1-255 characters" })
    }
    const filter: Filter = { categories: options.categories }
    yield* Effect.forEach(options.categories ?? [], StreamId.validateCategory)
    if (options.categories !== undefined && options.categories.length === 0) {
      return yield* new InvalidInput({ field: "categories", reason: "an empty list reads nothing" })
    }
    const batchSize = options.batchSize ?? 100
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
      return yield* new InvalidInput({ field: "batchSize", reason: `${batchSize} is not a positive integer` })
    }
    const pollInterval = Duration.decode(options.pollInterval ?? "1 second")
    const persisted = Option.getOrElse(yield* store.readCheckpoint(subscriptionId), () => checkpointAt(Cursor.start))
    const state = yield* Ref.make<Internal>({
      read: persisted.cursor,
      start: persisted.cursor,
      ordering: HoldBack.resume(persisted.delivered)
    })
    const wake = yield* Queue.sliding<void>(1)
    yield* store.wakeups.pipe(
      Stream.runForEach(() => Queue.offer(wake, undefined)),
      Effect.retry(Schedule.spaced("1 second")),
      Effect.forkScoped
    )
    const heldGauge = Metric.tagged(Metrics.heldBack, "subscription", subscriptionId)
    const lagGauge = Metric.tagged(Metrics.subscriptionLag, "subscription", subscriptionId)
    const deliveredCounter = Metric.tagged(Metrics.delivered, "subscription", subscriptionId)

    const poll = Effect.gen(function* () {
      const current = yield* Ref.get(state)
      const page = yield* store.poll(filter, current.read, batchSize)
      if (page.length === 0) return []
      const unknown = HoldBack.unknownStreams(current.ordering, page)
      const baseline =
        unknown.length === 0 || Cursor.isZero(current.start)
          ? new Map<string, number>()
          : yield* store.baseline(unknown, current.start)
      const result = HoldBack.step(current.ordering, page, baseline, subscriptionId)
      if ("_tag" in result) return yield* result
      const next: Internal = { ...current, read: Cursor.of(page[page.length - 1]!), ordering: result.state }
      yield* Ref.set(state, next)
      yield* Metric.set(heldGauge, HoldBack.heldCount(result.state))
      yield* Metric.incrementBy(deliveredCounter, result.deliver.length)
      return result.deliver
    }).pipe(
      Effect.tap((delivered) => Effect.annotateCurrentSpan("mire.batch_size", delivered.length)),
      Effect.withSpan("Subscription.poll", { attributes: { "mire.subscription_id": subscriptionId } })
    )

    const position = Effect.map(Ref.get(state), (s) => {
      const checkpoint = HoldBack.checkpoint(s.ordering, s.read)
      return { read: s.read, safe: checkpoint.cursor, held: HoldBack.heldCount(s.ordering), checkpoint }
    })

    const checkpoint = (fence?: Fence) =>
      Effect.flatMap(position, ({ checkpoint }) =>
        store.writeCheckpoint(subscriptionId, checkpoint, Option.fromNullable(fence))
      )

    const reset = (cursor: Cursor.Cursor = Cursor.start) =>
      Effect.zipRight(
        Ref.set(state, { read: cursor, start: cursor, ordering: HoldBack.empty }),
        Effect.asVoid(store.writeCheckpoint(subscriptionId, checkpointAt(cursor), Option.none()))
      )

    const awaitWakeup = Queue.take(wake).pipe(
      Effect.timeout(pollInterval),
      Effect.ignore,
      Effect.zipRight(Queue.takeAll(wake)),
      Effect.asVoid
    )

    const lag = Effect.flatMap(position, ({ safe }) => store.lag(filter, safe)).pipe(
      Effect.tap((l) => Metric.set(lagGauge, l.events))
    )

    const batches = Stream.repeatEffectOption(
      Effect.gen(function* () {
        for (;;) {
          const before = (yield* Ref.get(state)).read
          const got = yield* poll
          if (got.length > 0) return got
          // A page that delivered nothing but moved the cursor (all held) polls again at once.
          const moved = Cursor.order((yield* Ref.get(state)).read, before) !== 0
          if (!moved) yield* awaitWakeup
        }
      }).pipe(Effect.mapError(Option.some))
    )

    return { subscriptionId, poll, checkpoint, reset, position, awaitWakeup, lag, batches } satisfies Subscription
  })
