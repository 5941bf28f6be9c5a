/**
 * Subscriptions: a resumable cursor over the whole log, one category or a
 * list of categories, delivering commit-safe and in per-stream order.
 *
 * - **xmin guard**: a poll returns only events of transactions older than
 *   the oldest one still open, so nothing can commit behind the cursor.
 * - **Per-stream order**: see {@link HoldBack}; the persisted checkpoint
 *   never moves past a held event.
 * - **Backstop**: a regression fails the poll with `OrderingViolation`.
 * - **Gaps are loud**: a held stream whose next version is not in the log,
 *   although a later one is committed, fails the poll with `MissingVersion`
 *   (see `SubscriptionStore.missing` for why that absence is final).
 * - **Bounded**: per-poll cost follows the page and what is held; memory
 *   follows what is held or delivered past the safe cursor (see
 *   {@link HoldBack}), not the number of streams ever seen.
 * - **Wake-ups**: appends notify; a waiting subscription polls at once, and
 *   polls every `pollInterval` anyway (a missed notification only delays).
 *
 * A store supplies the `SubscriptionStore` primitives; the logic is
 * here, once.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Checkpoint from "./Checkpoint.js"
import * as Cursor from "./Cursor.js"
import * as Wakeup from "./internal/wakeup.js"
import { InvalidInput, MissingVersion, type OrderingViolation, type StoreError, type XidAhead } from "./EventStoreError.js"
import * as HoldBack from "./HoldBack.js"
import type { Fence } from "./Lease.js"
import * as Metrics from "./Metrics.js"
import type { RecordedEvent } from "./RecordedEvent.js"
import * as StreamId from "./StreamId.js"
import * as SubscriptionId from "./SubscriptionId.js"
import * as SubscriptionStore from "./SubscriptionStore.js"

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
 * Events per poll when `batchSize` is not given: large enough that a
 * catch-up is not bound by round trips (a page of 100 halves its throughput).
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultBatchSize = 1000

/**
 * Options of a subscription.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends Filter {
  readonly subscriptionId: string
  /** Events per poll (default {@link defaultBatchSize}, 1000). */
  readonly batchSize?: number
  /** Longest wait between polls without a notification (default 1 s). */
  readonly pollInterval?: Duration.DurationInput
  /**
   * Streams behind the safe cursor remembered (to spare a lookup when they
   * appear again) before the oldest are forgotten (default
   * {@link HoldBack.defaultRetain}).
   */
  readonly retainStreams?: number
}

/**
 * A deliverable batch and the checkpoint that covers it, taken right after
 * its poll: persisting it once the batch is handled is safe however far the
 * subscription has polled since.
 *
 * @since 0.1.0
 * @category models
 */
export interface Batch {
  readonly events: ReadonlyArray<RecordedEvent>
  readonly checkpoint: Checkpoint.Checkpoint
}

/**
 * A live subscription.
 *
 * @since 0.1.0
 * @category models
 */
export interface Subscription {
  readonly subscriptionId: SubscriptionId.SubscriptionId
  /** One poll: the events it makes deliverable (possibly none). */
  readonly poll: Effect.Effect<ReadonlyArray<RecordedEvent>, OrderingViolation | MissingVersion | StoreError>
  /** Persists the safe cursor (never past a held event); with a fence, only while it holds. */
  readonly checkpoint: (fence?: Fence) => Effect.Effect<boolean, StoreError>
  /**
   * Replays from the start, or from any `cursor`: every stream is delivered in
   * order from there (see {@link checkpointFor}); at-least-once, and the
   * backstop forgets what was delivered.
   */
  readonly reset: (cursor?: Cursor.Cursor) => Effect.Effect<void, StoreError>
  /** The read cursor and the cursor a checkpoint would persist. */
  readonly position: Effect.Effect<{
    readonly read: Cursor.Cursor
    readonly safe: Cursor.Cursor
    readonly held: number
    /** Streams remembered (held, past the safe cursor, or retained behind it). */
    readonly remembered: number
    /** What a checkpoint now would persist. */
    readonly checkpoint: Checkpoint.Checkpoint
  }>
  /** Waits for a wake-up (a notification or the poll interval). */
  readonly awaitWakeup: Effect.Effect<void>
  readonly lag: Effect.Effect<SubscriptionStore.Lag, StoreError>
  /**
   * Every deliverable batch, polling again at once after a full batch and
   * otherwise on a notification or the poll interval. Runs until interrupted.
   */
  readonly batches: Stream.Stream<ReadonlyArray<RecordedEvent>, OrderingViolation | MissingVersion | StoreError>
  /**
   * {@link batches}, each with its checkpoint (see {@link Batch}), so a
   * consumer can poll the next batch while it handles and checkpoints one.
   */
  readonly checkpointed: Stream.Stream<Batch, OrderingViolation | MissingVersion | StoreError>
}

/**
 * The checkpoint that means "everything at or below `cursor` was delivered,
 * in per-stream order", for any cursor. A stream inverted across `cursor`
 * (a version at or below it after a lower version above it) cannot have had
 * its higher version delivered: the checkpoint's cursor moves back before
 * the lowest such event, so it is read again, and every stream with events
 * between the two cursors is recorded with the versions delivered (its
 * prefix at `cursor`), so nothing is delivered twice or taken for a
 * regression. A cursor across which no stream is inverted is kept as is.
 *
 * @since 0.1.0
 * @category checkpoints
 */
export const checkpointFor = (
  filter: Filter,
  cursor: Cursor.Cursor
): Effect.Effect<Checkpoint.Checkpoint, StoreError, SubscriptionStore.SubscriptionStore> =>
  Effect.gen(function* () {
    if (Cursor.isZero(cursor)) return Checkpoint.at(Cursor.start)
    const store = yield* SubscriptionStore.SubscriptionStore
    const lowest = yield* store.inversionBelow(filter, cursor)
    if (Option.isNone(lowest)) return Checkpoint.at(cursor)
    const safe = Cursor.before(lowest.value)
    return { cursor: safe, delivered: yield* store.prefixes(filter, safe, cursor) }
  })

/**
 * Whether a wake-up `payload` (a category, or `""`: wake everyone) concerns
 * a subscription with this filter.
 *
 * @since 0.1.0
 * @category wake-ups
 */
export const wakes = (filter: Filter): ((payload: string) => boolean) => {
  if (filter.categories === undefined) return () => true
  const wanted = new Set(filter.categories)
  return (payload) => payload === "" || wanted.has(payload)
}

/** Records why a subscription stopped, for status (best effort: the failure itself is what the caller sees). */
const recordFailure = (
  store: SubscriptionStore.SubscriptionStore,
  subscriptionId: string,
  error: { readonly _tag: string; readonly message: string }
): Effect.Effect<void> => Effect.ignore(store.recordFailure(subscriptionId, `${error._tag}: ${error.message}`))

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
 * ```ts
 * import { Subscription } from "@mire/core"
 * import { Effect } from "effect"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const sub = yield* Subscription.make({ subscriptionId: "balances", categories: ["account"] })
 *     const events = yield* sub.poll
 *     yield* Effect.log(`read ${events.length} events`)
 *     yield* sub.checkpoint()
 *   })
 * )
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<Subscription, StoreError | InvalidInput | XidAhead, SubscriptionStore.SubscriptionStore | Scope.Scope> =>
  Effect.gen(function* () {
    const store = yield* SubscriptionStore.SubscriptionStore
    const subscriptionId = yield* SubscriptionId.validate(options.subscriptionId)
    const filter: Filter = { categories: options.categories }
    yield* Effect.forEach(options.categories ?? [], StreamId.validateCategory)
    if (options.categories !== undefined && options.categories.length === 0) {
      return yield* new InvalidInput({ field: "categories", reason: "an empty list reads nothing" })
    }
    const batchSize = options.batchSize ?? defaultBatchSize
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
      return yield* new InvalidInput({ field: "batchSize", reason: `${batchSize} is not a positive integer` })
    }
    const pollInterval = Duration.decode(options.pollInterval ?? "1 second")
    const retain = options.retainStreams ?? HoldBack.defaultRetain
    if (!Number.isSafeInteger(retain) || retain < 0) {
      return yield* new InvalidInput({ field: "retainStreams", reason: `${retain} is not a non-negative integer` })
    }
    const stored = yield* store
      .readCheckpoint(subscriptionId)
      .pipe(Effect.tapErrorTag("XidAhead", (e) => recordFailure(store, subscriptionId, e)))
    const persisted = Option.getOrElse(stored, () => Checkpoint.at(Cursor.start))
    // Its categories, for status (a first checkpoint creates the row: they are recorded then).
    yield* store.describe(subscriptionId, filter)
    const described = yield* Ref.make(Option.isSome(stored))
    const initial = (checkpoint: Checkpoint.Checkpoint): Internal => ({
      read: checkpoint.cursor,
      start: checkpoint.cursor,
      ordering: HoldBack.resume(checkpoint.delivered, { retain })
    })
    const state = yield* Ref.make<Internal>(initial(persisted))
    const wakeupsMetric = Metric.tagged(Metrics.wakeups, "subscription", subscriptionId)
    const wakeup = yield* Wakeup.make(Stream.filter(store.wakeups, wakes(filter)), {
      capacity: 1,
      retry: "1 second",
      onWakeup: (payload) => Metric.update(wakeupsMetric, payload)
    })
    const heldGauge = Metric.tagged(Metrics.heldBack, "subscription", subscriptionId)
    const lagGauge = Metric.tagged(Metrics.subscriptionLag, "subscription", subscriptionId)
    const deliveredCounter = Metric.tagged(Metrics.delivered, "subscription", subscriptionId)

    /** Fails when a held stream waits for a version that is not in the log (see `SubscriptionStore.missing`). */
    const checkGaps = (waiting: ReadonlyArray<HoldBack.Waiting>) =>
      Effect.gen(function* () {
        if (waiting.length === 0) return
        const absent = yield* store.missing(waiting.map((w) => ({ streamId: w.streamId, version: w.missing })))
        const gap = waiting.find((w) => absent.some((a) => a.streamId === w.streamId && a.version === w.missing))
        if (gap !== undefined) return yield* new MissingVersion({ subscriptionId, ...gap })
      })

    const poll = Effect.gen(function* () {
      const current = yield* Ref.get(state)
      const page = yield* store.poll(filter, current.read, batchSize)
      if (page.length === 0) {
        // Caught up: every held stream's missing version is checked again (it may have been deleted since).
        yield* checkGaps(HoldBack.waiting(current.ordering))
        // Everything read before a restart has been read again: no skipped version is still ahead.
        yield* Ref.update(state, (s) => {
          const ordering = s === current ? HoldBack.caughtUp(s.ordering) : s.ordering
          return ordering === s.ordering ? s : { ...s, ordering }
        })
        return []
      }
      // Streams not remembered (never seen, or forgotten behind the safe cursor): their delivered version
      // is the highest at or below the read cursor, since every event of theirs up to it was read.
      const unknown = HoldBack.unknownStreams(current.ordering, page, Cursor.isZero(current.start))
      const baseline = unknown.length === 0 ? new Map<string, number>() : yield* store.baseline(unknown, current.read)
      const decided = HoldBack.plan(current.ordering, page, baseline, subscriptionId)
      if ("_tag" in decided) return yield* decided
      // Before anything is applied: streams held in this page are checked at once; a short page (caught up)
      // checks every held stream.
      yield* checkGaps(
        page.length < batchSize ? HoldBack.waiting(current.ordering, decided) : HoldBack.waitingIn(decided)
      )
      // Applied and recorded in one synchronous step (the state's storage is updated in place): an
      // interruption cannot leave the storage ahead of the read cursor.
      // A reset meanwhile wins: this page was read for the state it replaced.
      const next = yield* Ref.modify(state, (s): readonly [Internal | undefined, Internal] => {
        if (s !== current) return [undefined, s]
        const applied: Internal = { ...s, read: decided.read, ordering: HoldBack.commit(s.ordering, decided) }
        return [applied, applied]
      })
      if (next === undefined) return []
      yield* Metric.set(heldGauge, HoldBack.heldCount(next.ordering))
      yield* Metric.incrementBy(deliveredCounter, decided.deliver.length)
      return decided.deliver
    }).pipe(
      Effect.tapError((e) => (e._tag === "StoreError" ? Effect.void : recordFailure(store, subscriptionId, e))),
      Effect.tap((delivered) => Effect.annotateCurrentSpan("mire.batch_size", delivered.length)),
      Effect.withSpan("Subscription.poll", { attributes: { "mire.subscription_id": subscriptionId } })
    )

    const position = Effect.map(Ref.get(state), (s) => {
      const checkpoint = HoldBack.checkpoint(s.ordering, s.read)
      return {
        read: s.read,
        safe: checkpoint.cursor,
        held: HoldBack.heldCount(s.ordering),
        remembered: HoldBack.rememberedCount(s.ordering),
        checkpoint
      }
    })

    const checkpoint = (fence?: Fence) =>
      Effect.flatMap(position, ({ checkpoint }) =>
        store.writeCheckpoint(subscriptionId, checkpoint, Option.fromNullable(fence))
      ).pipe(
        Effect.tap((written) =>
          written
            ? Effect.flatMap(Ref.getAndSet(described, true), (done) => (done ? Effect.void : store.describe(subscriptionId, filter)))
            : Effect.void
        )
      )

    const reset = (cursor: Cursor.Cursor = Cursor.start) =>
      Effect.gen(function* () {
        const checkpoint = yield* checkpointFor(filter, cursor).pipe(Effect.provideService(SubscriptionStore.SubscriptionStore, store))
        yield* Ref.set(state, initial(checkpoint))
        yield* store.writeCheckpoint(subscriptionId, checkpoint, Option.none())
      })

    const awaitWakeup = wakeup.wait(pollInterval)

    const lag = Effect.flatMap(position, ({ safe }) => store.lag(filter, safe)).pipe(
      Effect.tap((l) => Metric.set(lagGauge, l.events))
    )

    /** One poll; when it delivered nothing and did not move the cursor (a page all held moves it), a wait for a wake-up. */
    const pollOrWait = Effect.gen(function* () {
      const before = (yield* Ref.get(state)).read
      const got = yield* poll
      if (got.length === 0 && Cursor.order((yield* Ref.get(state)).read, before) === 0) yield* awaitWakeup
      return got
    })
    const nextBatch = Effect.repeat(pollOrWait, { until: (got) => got.length > 0 })
    const batches = Stream.repeatEffectOption(Effect.mapError(nextBatch, Option.some))
    // The checkpoint is read in the same fiber right after the poll, before any other poll of this stream.
    const checkpointed = Stream.repeatEffectOption(
      Effect.mapError(
        Effect.flatMap(nextBatch, (events) => Effect.map(position, ({ checkpoint }): Batch => ({ events, checkpoint }))),
        Option.some
      )
    )

    return { subscriptionId, poll, checkpoint, reset, position, awaitWakeup, lag, batches, checkpointed } satisfies Subscription
  })
