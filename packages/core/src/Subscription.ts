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
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Checkpoint from "./Checkpoint.js"
import * as Cursor from "./Cursor.js"
import { countedSpan } from "./internal/release.js"
import * as Wakeup from "./internal/wakeup.js"
import { InvalidInput, MissingVersion, type OrderingViolation, type StoreError, type XidAhead } from "./EventStoreError.js"
import * as HoldBack from "./HoldBack.js"
import * as Lease from "./Lease.js"
import type { Fence } from "./Lease.js"
import * as LeaseStore from "./LeaseStore.js"
import * as Metrics from "./Metrics.js"
import * as Partition from "./Partition.js"
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
  /**
   * Only the events of this shard's streams (see `Partition`): the store
   * applies it (Postgres in SQL, over an index per count).
   *
   * @since 0.2.0
   */
  readonly shard?: Partition.Shard | undefined
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
  /**
   * Where a subscription without a checkpoint starts (default `"start"`):
   * see {@link StartFrom}. Resolved once, at its first start, and persisted
   * as its checkpoint; an existing checkpoint is never overridden.
   *
   * @since 0.2.0
   */
  readonly startFrom?: StartFrom | undefined
}

/**
 * Where a subscription starts:
 *
 * - `"start"`: every event of the log;
 * - `"head"`: every event committed after it starts, and none committed
 *   before, even while a transaction held open elsewhere holds the xmin
 *   horizon back (see {@link resolveStart});
 * - `{ position }`: the event at that global position (or, in a gap, the
 *   next one) and every event a subscription delivers after it, and the
 *   events of transactions still open at the start, wherever they commit;
 * - `{ time }`: the first event, in delivery order, recorded at or after
 *   `time`, and everything after it (so every event recorded at or after
 *   `time` is delivered, also by a transaction still open at the start);
 *   the head when nothing was recorded since.
 *
 * Every stream is delivered in order from there (see {@link checkpointFor}).
 *
 * @since 0.2.0
 * @category models
 */
export type StartFrom = "start" | "head" | { readonly position: bigint } | { readonly time: Date }

/**
 * A start option checked: a position is a positive integer, a time a valid
 * date.
 *
 * @since 0.2.0
 * @category start
 */
export const validateStart = (from: StartFrom): Effect.Effect<StartFrom, InvalidInput> => {
  if (from === "start" || from === "head") return Effect.succeed(from)
  if (typeof from === "object" && from !== null && "position" in from && typeof from.position === "bigint") {
    return from.position >= 1n
      ? Effect.succeed(from)
      : Effect.fail(new InvalidInput({ field: "startFrom", reason: `position ${from.position} is not a positive integer` }))
  }
  if (typeof from === "object" && from !== null && "time" in from && from.time instanceof Date) {
    return Number.isNaN(from.time.getTime())
      ? Effect.fail(new InvalidInput({ field: "startFrom", reason: "the time is not a valid date" }))
      : Effect.succeed(from)
  }
  return Effect.fail(
    new InvalidInput({ field: "startFrom", reason: `expected "start", "head", { position: bigint } or { time: Date }` })
  )
}

/**
 * Reads a start as written on a command line: `start`, `head`, a global
 * position (digits) or an ISO 8601 time (`2026-12-01T12:00:00Z`, or a date).
 *
 * @example
 * ```ts
 * import { Subscription } from "@mire/core"
 * import { Effect } from "effect"
 *
 * assert.deepStrictEqual(Effect.runSync(Subscription.parseStart("1200")), { position: 1200n })
 * ```
 * @since 0.2.0
 * @category start
 */
export const parseStart = (text: string): Effect.Effect<StartFrom, InvalidInput> => {
  const trimmed = text.trim()
  if (trimmed === "start" || trimmed === "head") return Effect.succeed(trimmed)
  if (/^[0-9]+$/.test(trimmed)) return validateStart({ position: BigInt(trimmed) })
  if (/^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?)?$/.test(trimmed)) {
    const time = new Date(trimmed)
    if (!Number.isNaN(time.getTime())) return Effect.succeed({ time })
  }
  return Effect.fail(
    new InvalidInput({
      field: "to",
      reason: `"${text}" is not start, head, a global position or an ISO 8601 time`
    })
  )
}

/**
 * The checkpoint a subscription with this filter starts at for `from`
 * (validated): a full checkpoint (see {@link checkpointFor}), so every stream
 * is delivered in order from there. A position past the log's last event is
 * `InvalidInput`.
 *
 * @since 0.2.0
 * @category start
 */
export const resolveStart = (
  filter: Filter,
  from: StartFrom
): Effect.Effect<Checkpoint.Checkpoint, InvalidInput | StoreError, SubscriptionStore.SubscriptionStore> =>
  Effect.gen(function* () {
    const start = yield* validateStart(from)
    if (start === "start") return Checkpoint.at(Cursor.start)
    const store = yield* SubscriptionStore.SubscriptionStore
    if (start === "head") return yield* headCheckpoint(store, filter)
    // The commit-safe head, read BEFORE the point (see pointCheckpoint).
    const head = Option.getOrElse(yield* store.locate("head"), () => Cursor.start)
    const found = yield* store.locate(start)
    if (Option.isSome(found)) return yield* pointCheckpoint(store, filter, head, Cursor.before(found.value))
    if ("position" in start) {
      return yield* new InvalidInput({ field: "startFrom", reason: `no event at or after global position ${start.position}` })
    }
    // Nothing recorded at or after that time yet: from the head.
    return yield* headCheckpoint(store, filter)
  })

/**
 * The checkpoint just before a located event (`target`), capped at the
 * commit-safe `head` read before the lookup. A transaction open at the
 * lookup may hold a lower id than the located event: its events, recorded
 * after the point, commit below `target` but above `head` (nothing open, or
 * begun later, commits below it). So when {@link checkpointFor}'s cursor is
 * above `head`, the cursor is `head` and the streams with events in
 * `(head, target]` are recorded as delivered up to their prefix at `target`
 * (as at the head): what was committed there is skipped, what commits there
 * later is delivered, each stream in order.
 */
const pointCheckpoint = (
  store: SubscriptionStore.SubscriptionStore,
  filter: Filter,
  head: Cursor.Cursor,
  target: Cursor.Cursor
): Effect.Effect<Checkpoint.Checkpoint, StoreError> =>
  Effect.gen(function* () {
    const checkpoint = yield* checkpointFor(filter, target).pipe(Effect.provideService(SubscriptionStore.SubscriptionStore, store))
    if (Cursor.order(checkpoint.cursor, head) <= 0) return checkpoint
    return { cursor: head, delivered: yield* store.prefixes(filter, head, target) }
  })

/**
 * The checkpoint at the head, exact: its cursor is the commit-safe head (the
 * greatest cursor of an event older than the oldest transaction still open:
 * nothing can commit behind it, so nothing committed from now on is
 * missed), and it records as delivered, for every stream of the filter with
 * events above it, the versions committed now (`prefixes` up to the log's
 * last cursor, read after the head): those events, committed by younger
 * transactions just before the start, are skipped when the horizon lets
 * them be read. A stream's committed versions are a prefix of it, so its
 * later versions are delivered in order, whatever their cursors. An event
 * committed while this runs is delivered or not with its stream's earlier
 * versions, never on its own.
 */
const headCheckpoint = (
  store: SubscriptionStore.SubscriptionStore,
  filter: Filter
): Effect.Effect<Checkpoint.Checkpoint, StoreError> =>
  Effect.gen(function* () {
    const head = Option.getOrElse(yield* store.locate("head"), () => Cursor.start)
    const last = yield* store.locate("last")
    if (Option.isNone(last) || Cursor.order(last.value, head) <= 0) return Checkpoint.at(head)
    return { cursor: head, delivered: yield* store.prefixes(filter, head, last.value) }
  })

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

/** What a poll that delivers nothing returns. */
const noEvents: Effect.Effect<ReadonlyArray<RecordedEvent>> = Effect.succeed([])

/** The baseline of a page whose streams are all remembered. */
const noBaseline: ReadonlyMap<string, number> = new Map()

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
    const shard = options.shard === undefined ? undefined : yield* Partition.validateShard(options.shard)
    // One shard of one is the whole log: no filter.
    const filter: Filter =
      shard === undefined || shard.count === 1 ? { categories: options.categories } : { categories: options.categories, shard: { index: shard.index, count: shard.count } }
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
    const startFrom = options.startFrom === undefined ? "start" : yield* validateStart(options.startFrom)
    const stored = yield* store
      .readCheckpoint(subscriptionId)
      .pipe(Effect.tapErrorTag("XidAhead", (e) => recordFailure(store, subscriptionId, e)))
    // A first start elsewhere than the start is persisted at once (unless another start won), so a
    // restart does not move it.
    const starts = Option.isNone(stored) && startFrom !== "start"
    const persisted = Option.isSome(stored)
      ? stored.value
      : starts
        ? yield* resolveStart(filter, startFrom).pipe(
            Effect.provideService(SubscriptionStore.SubscriptionStore, store),
            Effect.flatMap((checkpoint) => store.initCheckpoint(subscriptionId, checkpoint))
          )
        : Checkpoint.at(Cursor.start)
    // Its categories, for status (a first checkpoint creates the row: they are recorded then).
    yield* store.describe(subscriptionId, filter)
    const described = yield* Ref.make(Option.isSome(stored) || starts)
    // `upTo`: a cursor at or after every version the checkpoint records past its cursor (they may lie above
    // the xmin horizon: a start at the head), so they are skipped until the read cursor reaches it.
    const initial = (checkpoint: Checkpoint.Checkpoint, upTo: Cursor.Cursor | undefined): Internal => ({
      read: checkpoint.cursor,
      start: checkpoint.cursor,
      ordering: HoldBack.resume(checkpoint.delivered, { retain, upTo })
    })
    // Every version it records was committed before it was read: the log's last cursor now is past them.
    const upTo = persisted.delivered.size === 0 ? undefined : Option.getOrUndefined(yield* store.locate("last"))
    const state = yield* Ref.make<Internal>(initial(persisted, upTo))
    const wakeupsMetric = Metric.tagged(Metrics.wakeups, "subscription", subscriptionId)
    const wakeup = yield* Wakeup.make(Stream.filter(store.wakeups, wakes(filter)), {
      capacity: 1,
      retry: "1 second",
      onWakeup: (payload) => Metric.update(wakeupsMetric, payload)
    })
    const heldGauge = Metric.tagged(Metrics.heldBack, "subscription", subscriptionId)
    const lagGauge = Metric.tagged(Metrics.subscriptionLag, "subscription", subscriptionId)
    const deliveredCounter = Metric.tagged(Metrics.delivered, "subscription", subscriptionId)

    /**
     * The floors (first versions kept) of held streams that wait for a version removed by design
     * (a deleted or truncated stream); fails when a held stream waits for a version that is not
     * in the log otherwise (see `SubscriptionStore.missing`).
     */
    const checkGaps = (waiting: ReadonlyArray<HoldBack.Waiting>) =>
      Effect.gen(function* () {
        const floors = new Map<string, number>()
        if (waiting.length === 0) return floors
        const absent = yield* store.missing(waiting.map((w) => ({ streamId: w.streamId, version: w.missing })))
        for (const a of absent) {
          if (a.firstRetained !== undefined && a.version < a.firstRetained) floors.set(a.streamId, a.firstRetained)
        }
        const gap = waiting.find(
          (w) => !floors.has(w.streamId) && absent.some((a) => a.streamId === w.streamId && a.version === w.missing)
        )
        if (gap !== undefined) return yield* new MissingVersion({ subscriptionId, ...gap })
        return floors
      })

    /**
     * Plans a page, then checks the versions its held streams wait for (`every` held stream, or
     * only this page's): a stream waiting for a version removed by design moves past it (its
     * floor, see `HoldBack.plan`), and the page is planned again with it. Floors only rise, so
     * this ends.
     */
    const decide = (
      ordering: HoldBack.State,
      page: ReadonlyArray<RecordedEvent>,
      baseline: ReadonlyMap<string, number>,
      every: boolean
    ): Effect.Effect<HoldBack.Plan, StoreError | OrderingViolation | MissingVersion> => {
      // The usual page: no stream waits for a version, so there is no gap to check (and no generator).
      const first = HoldBack.plan(ordering, page, baseline, subscriptionId)
      if ("_tag" in first) return Effect.fail(first)
      if ((every ? HoldBack.waiting(ordering, first) : HoldBack.waitingIn(first)).length === 0) return Effect.succeed(first)
      return Effect.gen(function* () {
        const floors = new Map<string, number>()
        for (;;) {
          const decided = HoldBack.plan(ordering, page, baseline, subscriptionId, floors)
          if ("_tag" in decided) return yield* decided
          const found = yield* checkGaps(every ? HoldBack.waiting(ordering, decided) : HoldBack.waitingIn(decided))
          let raised = false
          for (const [streamId, floor] of found) {
            if (floor > (floors.get(streamId) ?? 1)) {
              floors.set(streamId, floor)
              raised = true
            }
          }
          if (!raised) return decided
        }
      })
    }

    /**
     * Applies a plan and records the read cursor in one synchronous step (the state's storage is
     * updated in place: an interruption cannot leave it ahead of the read cursor). A reset
     * meanwhile wins: the plan was made for the state it replaced (nothing is delivered).
     */
    const apply = (current: Internal, decided: HoldBack.Plan, read: Cursor.Cursor): Effect.Effect<ReadonlyArray<RecordedEvent>> =>
      Effect.flatMap(
        Ref.modify(state, (s): readonly [Internal | undefined, Internal] => {
          if (s !== current) return [undefined, s]
          const applied: Internal = { ...s, read, ordering: HoldBack.commit(s.ordering, decided) }
          return [applied, applied]
        }),
        (next) =>
          next === undefined
            ? noEvents
            : Effect.as(
                Effect.zipRight(
                  Metric.set(heldGauge, HoldBack.heldCount(next.ordering)),
                  Metric.incrementBy(deliveredCounter, decided.deliver.length)
                ),
                decided.deliver
              )
      )

    /**
     * A page read: its unknown streams' baselines looked up, then planned and applied (without
     * generators: it runs once per page of a catch-up).
     */
    const deliverPage = (current: Internal, page: ReadonlyArray<RecordedEvent>) => {
      // Before anything is applied: streams held in this page are checked at once; a short page (caught up)
      // checks every held stream.
      const every = page.length < batchSize
      const planned = (baseline: ReadonlyMap<string, number>) =>
        Effect.flatMap(decide(current.ordering, page, baseline, every), (decided) => apply(current, decided, decided.read))
      // Streams not remembered (never seen, or forgotten behind the safe cursor): their delivered version
      // is the highest at or below the read cursor, since every event of theirs up to it was read.
      const unknown = HoldBack.unknownStreams(current.ordering, page, Cursor.isZero(current.start))
      return unknown.length === 0 ? planned(noBaseline) : Effect.flatMap(store.baseline(unknown, current.read), planned)
    }

    /** A poll that found nothing (caught up). */
    const caughtUp = (current: Internal) =>
      Effect.gen(function* () {
        // Caught up: every held stream's missing version is checked again (it may have been deleted since,
        // by design: then the stream moves past it).
        if (HoldBack.heldCount(current.ordering) > 0) {
          const decided = yield* decide(current.ordering, [], new Map(), true)
          if (decided.changes.size > 0) return yield* apply(current, decided, current.read)
        }
        // Everything read before a restart has been read again: no skipped version is still ahead.
        const next = yield* Ref.updateAndGet(state, (s) => {
          const ordering = s === current ? HoldBack.caughtUp(s.ordering) : s.ordering
          return ordering === s.ordering ? s : { ...s, ordering }
        })
        // Skipped versions that may lie above the horizon (a start at the head): the next poll that finds
        // nothing has read everything up to the commit-safe head read now (see `HoldBack.observeHead`).
        if (HoldBack.skippedUpTo(next.ordering) !== undefined) {
          const head = yield* store.locate("head")
          if (Option.isSome(head)) {
            yield* Ref.update(state, (s) => {
              const ordering = s === next ? HoldBack.observeHead(s.ordering, head.value) : s.ordering
              return ordering === s.ordering ? s : { ...s, ordering }
            })
          }
        }
        return []
      })

    const pollPage = Effect.flatMap(Ref.get(state), (current) =>
      Effect.flatMap(store.poll(filter, current.read, batchSize), (page) =>
        page.length === 0 ? caughtUp(current) : deliverPage(current, page)
      )
    ).pipe(Effect.tapError((e) => (e._tag === "StoreError" ? Effect.void : recordFailure(store, subscriptionId, e))))

    // The poll's span, ended with the number of events delivered (see `countedSpan`).
    const poll = countedSpan("Subscription.poll", { attributes: { "mire.subscription_id": subscriptionId } }, pollPage, (span, delivered) =>
      span.attribute("mire.batch_size", delivered.length)
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
        // Its versions recorded past its cursor (prefixes) are at or below `cursor`.
        yield* Ref.set(state, initial(checkpoint, cursor))
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

/**
 * What a reset did.
 *
 * @since 0.2.0
 * @category models
 */
export interface Reset {
  readonly subscriptionId: SubscriptionId.SubscriptionId
  /** The checkpoint written. */
  readonly checkpoint: Checkpoint.Checkpoint
  /** The fence token after the reset (every reset bumps it). */
  readonly fenceToken: bigint
  /** The live lease a forced reset fenced out. */
  readonly displaced: Option.Option<Lease.LeaseStatus>
}

const leaseHeld = (lease: Lease.LeaseStatus) =>
  new Lease.LeaseHeld({
    subscriptionId: lease.subscriptionId,
    workerId: lease.workerId ?? "",
    fenceToken: lease.fenceToken,
    leasedUntil: lease.leasedUntil
  })

/**
 * Moves an existing subscription's checkpoint to `to` (see
 * {@link StartFrom}), computed over the categories it recorded, so every
 * stream is delivered in order from there. Refused with `LeaseHeld` while a
 * worker holds its lease, unless `force`. Every reset bumps the fence token
 * and frees the lease, so a holder (live, or expired but still running) has
 * its next fenced checkpoint refused and returns to standby; the next leader
 * starts at the new checkpoint. A subscription opened without a lease (plain
 * {@link make}) cannot be fenced: stop it first. An unknown subscription is
 * `InvalidInput`.
 *
 * @example
 * ```ts
 * import { Subscription } from "@mire/core"
 * import { Effect } from "effect"
 *
 * // Replay the last day into the "balances" read model, fencing out its current leader.
 * const program = Subscription.resetTo("balances", { time: new Date(Date.now() - 86_400_000) }, { force: true }).pipe(
 *   Effect.tap((reset) => Effect.log(`fence ${reset.fenceToken}`))
 * )
 * ```
 * @since 0.2.0
 * @category start
 */
export const resetTo = (
  subscriptionId: string,
  to: StartFrom,
  options: { readonly force?: boolean | undefined } = {}
): Effect.Effect<Reset, InvalidInput | Lease.LeaseHeld | StoreError, SubscriptionStore.SubscriptionStore | LeaseStore.LeaseStore> =>
  Effect.gen(function* () {
    const id = yield* SubscriptionId.validate(subscriptionId)
    const start = yield* validateStart(to)
    const force = options.force === true
    const leases = yield* LeaseStore.LeaseStore
    const store = yield* SubscriptionStore.SubscriptionStore
    const unknown = new InvalidInput({ field: "subscriptionId", reason: `no subscription ${id}` })
    // Refused before the log is read while a live lease is held; decided again under the row lock.
    const lease = yield* leases.status(id)
    if (Option.isNone(lease)) return yield* unknown
    const early = Lease.decideReset(lease.value, yield* Clock.currentTimeMillis, force)
    if (early._tag === "Held") return yield* leaseHeld(early.lease)
    const report = yield* store.report(id)
    const categories = Option.getOrUndefined(Option.flatMap(report, (r) => r.categories))
    const checkpoint = yield* resolveStart({ categories }, start)
    const decision = yield* leases.reset(id, checkpoint, force)
    switch (decision._tag) {
      case "Unknown":
        return yield* unknown
      case "Held":
        return yield* leaseHeld(decision.lease)
      case "Reset":
        return { subscriptionId: id, checkpoint, fenceToken: decision.fenceToken, displaced: Option.fromNullable(decision.displaced) }
    }
  }).pipe(Effect.withSpan("Subscription.resetTo", { attributes: { "mire.subscription_id": subscriptionId } }))
