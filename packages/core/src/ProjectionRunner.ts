/**
 * The projection runner: each unit of work (a projection's subscription, or
 * each shard of a partitioned one) is led in its own fiber, owned by the
 * runner's scope, while it holds the unit's lease. One coordinator per
 * runner, a `Schedule` forked into the scope, looks every
 * `leaseRecheckInterval`: it beats its worker's heartbeat, reads the live
 * workers and every unit's lease in one `WorkerStore` look, and takes the
 * pure decision of `Rebalance.decide`: it acquires the free units its fair
 * share (`⌈units ÷ live workers⌉`) gives it, and asks its leaderships beyond
 * that share to hand over at their next batch boundary (after the batch's
 * checkpoint; the lease is then released, so the worker that should lead it
 * acquires it at its next look). A leader polls, hands events to the
 * handler (retrying with a `Schedule`), and checkpoints under the fence,
 * while a heartbeat renews the lease. Losing the lease interrupts the work
 * and the unit stands by. A handler that keeps failing stops its projection
 * with a `ProjectionFailed` naming the event (never skipping it), unless the
 * projection says `onFailure: "skip"`: then the event becomes a dead letter
 * and the rest of its stream is parked behind it (see `DeadLetters`); other
 * projections keep running. A leader of any projection whose subscription
 * has dead letters (e.g. one led by a replica without `skip` during a
 * rollout) keeps their streams parked and redelivers retried ones, in order;
 * only a new failure follows its own `onFailure`. Without a `WorkerStore` in the context (a store
 * that has none), a runner sees only itself and acquires whatever is free.
 *
 * Failover: a leader that dies without releasing is replaced within
 * `leaseTtl + leaseRecheckInterval`; a joining worker receives its share
 * within a few recheck intervals.
 *
 * The decisions are pure functions ({@link afterLeadership}, {@link classify},
 * {@link stoppedAt}, `Rebalance.decide`); the leaderships' fibers live in a
 * `FiberMap` keyed by subscription id. A leader
 * hands each batch to the handler in one loop and polls the next batch
 * meanwhile; each batch carries the checkpoint taken right after its poll,
 * so a checkpoint never covers an event the handler has not finished.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberMap from "effect/FiberMap"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Cursor from "./Cursor.js"
import * as Partition from "./Partition.js"
import * as SubscriptionId from "./SubscriptionId.js"
import {
  type EventDecodeError,
  InvalidInput,
  type MissingVersion,
  type OrderingViolation,
  type StoreError,
  type XidAhead
} from "./EventStoreError.js"
import * as DeadLetters from "./DeadLetters.js"
import * as Lease from "./Lease.js"
import * as Metrics from "./Metrics.js"
import type * as Projection from "./Projection.js"
import type { RecordedEvent } from "./RecordedEvent.js"
import * as Subscription from "./Subscription.js"
import { releaseEvents } from "./internal/release.js"
import * as Checkpoint from "./Checkpoint.js"
import * as LeaseStore from "./LeaseStore.js"
import * as SubscriptionStore from "./SubscriptionStore.js"
import * as Rebalance from "./Rebalance.js"
import * as WorkerStore from "./WorkerStore.js"

/**
 * The event a projection stopped at (the checkpoint stays before it).
 *
 * @since 0.1.0
 * @category models
 */
export interface FailedEvent {
  readonly streamId: string
  readonly streamVersion: number
  readonly globalPosition: bigint
  readonly eventType: string
}

/**
 * Why a projection stopped. `E` is its handler's own error, kept typed.
 *
 * - `HandlerFailed`: the handler failed with its error on every attempt;
 * - `HandlerDied`: the handler threw or died on the last attempt;
 * - `Undecodable`: the event could not be decoded (or upcast) with the projection's Schema;
 * - `SubscriptionFailed`: the subscription refused to go on: a regression
 *   (`OrderingViolation`), a deleted version (`MissingVersion`), a log or
 *   checkpoint ahead of the server's transaction ids (`XidAhead`), or options
 *   it rejects (`InvalidInput`);
 * - `Died`: the runner or a store died (a bug), stopped visibly rather than silently.
 *
 * @since 0.1.0
 * @category models
 */
export type FailureReason<E = unknown> = Data.TaggedEnum<{
  HandlerFailed: { readonly event: FailedEvent; readonly attempts: number; readonly error: E }
  HandlerDied: { readonly event: FailedEvent; readonly attempts: number; readonly defect: unknown }
  Undecodable: { readonly event: FailedEvent; readonly attempts: number; readonly error: EventDecodeError }
  SubscriptionFailed: { readonly error: OrderingViolation | MissingVersion | XidAhead | InvalidInput | Partition.PartitionsChanged }
  Died: { readonly defect: unknown }
}>

interface FailureReasonDefinition extends Data.TaggedEnum.WithGenerics<1> {
  readonly taggedEnum: FailureReason<this["A"]>
}

/**
 * Constructors and matchers of {@link FailureReason}.
 *
 * @example
 * ```ts
 * import { ProjectionRunner } from "@mire/core"
 *
 * const reason = ProjectionRunner.FailureReason.Died({ defect: new Error("bug") })
 * assert.strictEqual(reason._tag, "Died")
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const FailureReason = Data.taggedEnum<FailureReasonDefinition>()

/**
 * A projection stopped, and why ({@link FailureReason}, with the handler's
 * error typed as `E`). Other projections keep running.
 *
 * @since 0.1.0
 * @category errors
 */
export class ProjectionFailed<out E = unknown> extends Data.TaggedError("ProjectionFailed")<{
  readonly subscriptionId: string
  readonly reason: FailureReason<unknown>
}> {
  /**
   * Why it stopped, with the handler's error typed as `E`.
   *
   * @since 0.1.0
   */
  declare readonly reason: FailureReason<E>

  /** The event it stopped at, when an event (not the log or a bug) stopped it. */
  get event(): FailedEvent | undefined {
    const reason = this.reason
    return "event" in reason ? reason.event : undefined
  }

  /** The stream it stopped at: the event's, or the stream whose order the log broke. */
  get streamId(): string | undefined {
    const reason = this.reason
    if ("event" in reason) return reason.event.streamId
    if (reason._tag !== "SubscriptionFailed") return undefined
    const error = reason.error
    return error._tag === "OrderingViolation" || error._tag === "MissingVersion" ? error.streamId : undefined
  }

  /** The version it stopped at: the event's, the regressed one, or the missing one. */
  get streamVersion(): number | undefined {
    const reason = this.reason
    if ("event" in reason) return reason.event.streamVersion
    if (reason._tag !== "SubscriptionFailed") return undefined
    const error = reason.error
    return error._tag === "OrderingViolation" ? error.version : error._tag === "MissingVersion" ? error.missing : undefined
  }

  /** The stored type of the event it stopped at. */
  get eventType(): string | undefined {
    return this.event?.eventType
  }

  /** Attempts at the event it stopped at. */
  get attempts(): number | undefined {
    const reason = this.reason
    return "attempts" in reason ? reason.attempts : undefined
  }

  /** The error or defect that stopped it (the handler's error as it failed). */
  override get cause(): unknown {
    const reason = this.reason
    return "defect" in reason ? reason.defect : reason.error
  }

  override get message(): string {
    const reason = this.reason
    const event = this.event
    const at =
      event === undefined
        ? ""
        : ` at ${event.streamId} v${event.streamVersion} (${event.eventType}, position ${event.globalPosition}) after ${this.attempts} attempt(s)`
    const why = "defect" in reason ? String(reason.defect) : reason._tag === "HandlerFailed" ? String(reason.error) : reason.error.message
    return `projection ${this.subscriptionId} stopped${at}: ${reason._tag}: ${why}`
  }
}

/**
 * A projection did not catch up with the log in time: its lag (events after
 * its checkpoint) when the time ran out.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotCaughtUp extends Schema.TaggedError<NotCaughtUp>()("NotCaughtUp", {
  subscriptionId: Schema.String,
  /** Events after the checkpoint at the deadline. */
  lag: Schema.Number,
  timeout: Schema.String
}) {
  override get message(): string {
    return `projection ${this.subscriptionId} not caught up within ${this.timeout} (${this.lag} event(s) behind)`
  }
}

/**
 * The default delays between a failing handler's attempts: exponential from
 * 100 ms, doubling (100, 200, 400, 800 ms, …), each delay jittered by a random
 * factor between 0.8 and 1.2.
 *
 * @since 0.1.0
 * @category schedules
 */
export const defaultRetry: Schedule.Schedule<Duration.Duration> = Schedule.exponential("100 millis").pipe(Schedule.jittered)

/**
 * The runner's settings, each with its default in {@link defaults}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Settings {
  /** Longest wait between polls without a notification. */
  readonly pollInterval: Duration.DurationInput
  /** Events per batch. */
  readonly batchSize: number
  /** Lease lifetime without renewal. */
  readonly leaseTtl: Duration.DurationInput
  /**
   * How often the runner looks (heartbeat, live workers, every unit's lease) and acquires or hands over units;
   * also the heartbeat's period: a worker counts as live for `max(leaseTtl, 2 × leaseRecheckInterval)` after
   * its last look.
   */
  readonly leaseRecheckInterval: Duration.DurationInput
  /** Delays between handler attempts. */
  readonly retry: Schedule.Schedule<unknown, unknown>
  /** Attempts per event (per batch, for a transactional projection) before the projection stops. */
  readonly maxAttempts: number
  /** How long `whenCaughtUp` waits when not told. */
  readonly caughtUpTimeout: Duration.DurationInput
}

/**
 * The default settings: polls at least every second, batches of
 * {@link Subscription.defaultBatchSize} (1000), a 30 s lease rechecked every
 * 5 s, 5 attempts {@link defaultRetry} apart, and 30 s for `whenCaughtUp`.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults: Settings = {
  pollInterval: "1 second",
  batchSize: Subscription.defaultBatchSize,
  leaseTtl: "30 seconds",
  leaseRecheckInterval: "5 seconds",
  retry: defaultRetry,
  maxAttempts: 5,
  caughtUpTimeout: "30 seconds"
}

/**
 * Runner options: its worker id, and any {@link Settings} other than the
 * {@link defaults}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends Partial<Settings> {
  readonly workerId: string
}

/** How often `whenCaughtUp` looks at the lag (one count query). */
const caughtUpPoll = Duration.millis(10)

/**
 * The schedule a runner retries a failing handler with (for a transactional
 * projection, the whole batch): the delays of `retry` (default
 * {@link defaultRetry}), at most `maxAttempts - 1` times (default 5 attempts
 * in all), after which the projection stops with `ProjectionFailed`.
 *
 * @example
 * ```ts
 * import { ProjectionRunner } from "@mire/core"
 * import { Chunk, Effect, Schedule } from "effect"
 *
 * // The delays a runner waits after each of the first 3 failures (of 4 attempts), computed without waiting:
 * const delays = Schedule.run(Schedule.delays(ProjectionRunner.retrySchedule({ maxAttempts: 4 })), 0, [1, 2, 3])
 * Effect.runPromise(delays).then((d) => assert.strictEqual(Chunk.size(d), 3))
 * ```
 * @since 0.1.0
 * @category schedules
 */
export const retrySchedule = (options: Partial<Pick<Settings, "retry" | "maxAttempts">>): Schedule.Schedule<unknown, unknown> =>
  (options.retry ?? defaults.retry).pipe(
    Schedule.intersect(Schedule.recurs(Math.max(1, options.maxAttempts ?? defaults.maxAttempts) - 1))
  )

/**
 * An effect retried on `schedule` while `retryable` holds, counting its
 * attempts (1-based, passed to `attempt`): the last error with the attempts
 * made, when it gives up. The one retry loop of the runner (an event, or a
 * transactional batch).
 *
 * @example
 * ```ts
 * import { ProjectionRunner } from "@mire/core"
 * import { Effect, Schedule } from "effect"
 *
 * // Fails twice, succeeds on the third attempt.
 * const third = ProjectionRunner.retryWithAttempts(
 *   (n) => (n < 3 ? Effect.fail(n) : Effect.succeed(n)),
 *   Schedule.recurs(5),
 *   () => true
 * )
 * Effect.runPromise(third).then((n) => assert.strictEqual(n, 3))
 * ```
 * @since 0.1.0
 * @category schedules
 */
export const retryWithAttempts = <A, E, R, X>(
  attempt: (n: number) => Effect.Effect<A, E, R>,
  schedule: Schedule.Schedule<X, E>,
  retryable: (error: E) => boolean
): Effect.Effect<A, { readonly error: E; readonly attempts: number }, R> =>
  Effect.flatMap(Schedule.driver(schedule), (driver) => {
    const from = (n: number): Effect.Effect<A, { readonly error: E; readonly attempts: number }, R> =>
      Effect.catchAll(attempt(n), (error) =>
        retryable(error)
          ? Effect.matchEffect(driver.next(error), {
              onFailure: () => Effect.fail({ error, attempts: n }),
              onSuccess: () => from(n + 1)
            })
          : Effect.fail({ error, attempts: n })
      )
    return from(1)
  })

/**
 * Why handling one event failed, as its handler's effect ended.
 *
 * @since 0.1.0
 * @category decisions
 */
export type EventFailure<E> = Data.TaggedEnum<{
  HandlerFailed: { readonly error: E }
  HandlerDied: { readonly defect: unknown }
  Undecodable: { readonly error: EventDecodeError }
}>

interface EventFailureDefinition extends Data.TaggedEnum.WithGenerics<1> {
  readonly taggedEnum: EventFailure<this["A"]>
}

const EventFailure = Data.taggedEnum<EventFailureDefinition>()

/** An event's decode error, told apart from whatever the handler fails with. */
class DecodeFailed extends Data.TaggedClass("DecodeFailed")<{ readonly error: EventDecodeError }> {}

/**
 * Classifies how handling an event ended (its cause): the handler's error, a
 * defect, an undecodable event; none for an interruption (the fiber is
 * being stopped: nothing to retry or report).
 *
 * @since 0.1.0
 * @category decisions
 */
export const classify = <E>(cause: Cause.Cause<E | DecodeFailed>): Option.Option<EventFailure<E>> => {
  // Only a pure interruption: a handler failure beside the interruption of its sibling fibers
  // (`Effect.all` with concurrency) is still the handler's failure.
  if (Cause.isInterruptedOnly(cause)) return Option.none()
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) {
    const error = failure.value
    return Option.some(
      error instanceof DecodeFailed ? EventFailure.Undecodable({ error: error.error }) : EventFailure.HandlerFailed({ error })
    )
  }
  return Option.some(EventFailure.HandlerDied({ defect: Cause.squash(cause) }))
}

const failedEvent = (event: RecordedEvent): FailedEvent => ({
  streamId: event.streamId,
  streamVersion: event.streamVersion,
  globalPosition: event.globalPosition,
  eventType: event.eventType
})

/**
 * The reason a projection stops when `event` failed `attempts` times, the
 * last time with `failure`.
 *
 * @since 0.1.0
 * @category decisions
 */
export const stoppedAt = <E>(event: RecordedEvent, attempts: number, failure: EventFailure<E>): FailureReason<E> => {
  const at = failedEvent(event)
  switch (failure._tag) {
    case "HandlerFailed":
      return FailureReason.HandlerFailed({ event: at, attempts, error: failure.error })
    case "HandlerDied":
      return FailureReason.HandlerDied({ event: at, attempts, defect: failure.defect })
    case "Undecodable":
      return FailureReason.Undecodable({ event: at, attempts, error: failure.error })
  }
}

/**
 * How a leadership (or an attempt at one) ended.
 *
 * @since 0.1.0
 * @category decisions
 */
export type LeaderOutcome<E> = Either.Either<Option.Option<unknown>, LeaderExit<E>>

/**
 * What a projection's supervisor does next.
 *
 * - `Lead`: try to lead again at once (the work ended on its own);
 * - `StandBy`: wait `leaseRecheckInterval`, then try to acquire the lease
 *   (another worker holds it, it was lost, or the store failed);
 * - `Stop`: the projection stops with its failure.
 *
 * @since 0.1.0
 * @category decisions
 */
export type Next<E> = Data.TaggedEnum<{
  Lead: {}
  StandBy: { readonly why: "lease held elsewhere" | "lease lost" | "store failed"; readonly error: Option.Option<Lease.LeaseLost | StoreError> }
  Stop: { readonly failure: ProjectionFailed<E> }
}>

interface NextDefinition extends Data.TaggedEnum.WithGenerics<1> {
  readonly taggedEnum: Next<this["A"]>
}

/**
 * Constructors and matchers of {@link Next}.
 *
 * @since 0.1.0
 * @category decisions
 */
export const Next = Data.taggedEnum<NextDefinition>()

/**
 * The supervisor's decision after a leadership of `subscriptionId` ended
 * with `outcome`: a lost lease or a failing store stands by and tries again;
 * anything the log or the handler refuses stops the projection.
 *
 * @since 0.1.0
 * @category decisions
 */
export const afterLeadership = <E>(subscriptionId: string, outcome: LeaderOutcome<E>): Next<E> => {
  if (Either.isRight(outcome)) {
    return Option.isNone(outcome.right) ? Next.StandBy({ why: "lease held elsewhere", error: Option.none() }) : Next.Lead()
  }
  const error = outcome.left
  switch (error._tag) {
    case "LeaseLost":
      return Next.StandBy({ why: "lease lost", error: Option.some(error) })
    case "StoreError":
      return Next.StandBy({ why: "store failed", error: Option.some(error) })
    case "ProjectionFailed":
      return Next.Stop({ failure: error })
    default:
      return Next.Stop({ failure: new ProjectionFailed<E>({ subscriptionId, reason: FailureReason.SubscriptionFailed({ error }) }) })
  }
}

/**
 * The state of one projection on this runner.
 *
 * @since 0.1.0
 * @category models
 */
export type State = "standby" | "leader" | "failed"

/**
 * One projection's status on this runner, with its lease and lag.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProjectionStatus<E = unknown> {
  readonly subscriptionId: string
  readonly workerId: string
  readonly state: State
  /** The fence token this runner holds, when leader. */
  readonly fenceToken: Option.Option<bigint>
  /** The lease as stored (possibly another worker's). */
  readonly lease: Option.Option<Lease.LeaseStatus>
  readonly lag: SubscriptionStore.Lag
  /** Events this runner handled (attempts that succeeded). */
  readonly handled: number
  readonly failure: Option.Option<ProjectionFailed<E>>
  /**
   * The failure the store recorded for this subscription (by any process:
   * a missing version, a restore, a handler that kept failing), until its
   * next checkpoint or reset.
   */
  readonly recordedFailure: Option.Option<{ readonly message: string; readonly at: Date }>
  /** Its dead letters by status (`onFailure: "skip"`; all 0 without a `DeadLetterStore`). */
  readonly deadLetters: DeadLetters.Counts
}

/**
 * A running set of projections.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProjectionRunner<E = unknown> {
  readonly workerId: string
  /** Each projection's status; a log or checkpoint ahead of the server's xids shows as that projection `failed`. */
  readonly status: Effect.Effect<ReadonlyArray<ProjectionStatus<E>>, StoreError>
  /**
   * Waits until the projection has handled everything appended so far (lag
   * 0). Fails at once with `ProjectionFailed` when it stopped, with
   * `NotCaughtUp` after `timeout` (default {@link defaults}), and with
   * `InvalidInput` when this runner does not run it.
   */
  readonly whenCaughtUp: (
    subscriptionId: string,
    timeout?: Duration.DurationInput
  ) => Effect.Effect<void, ProjectionFailed<E> | NotCaughtUp | StoreError | InvalidInput | XidAhead>
  /**
   * How the units are spread at this runner's last look: the fair share and
   * every live worker with the units it leads.
   */
  readonly balance: Effect.Effect<Balance>
}

/**
 * The `ProjectionRunner` tag.
 *
 * @since 0.1.0
 * @category tags
 */
export const ProjectionRunner: Context.Tag<ProjectionRunner, ProjectionRunner> = Context.GenericTag<ProjectionRunner>(
  "@mire/core/ProjectionRunner"
)

interface Slot<E> {
  readonly state: State
  readonly fenceToken: Option.Option<bigint>
  readonly handled: number
  readonly failure: Option.Option<ProjectionFailed<E>>
}

const standby: Slot<never> = { state: "standby", fenceToken: Option.none(), handled: 0, failure: Option.none() }

/**
 * Why a leadership ended, when it failed.
 *
 * @since 0.2.0
 * @category models
 */
export type LeaderExit<E> =
  | ProjectionFailed<E>
  | OrderingViolation
  | MissingVersion
  | XidAhead
  | Lease.LeaseLost
  | StoreError
  | InvalidInput
  | Partition.PartitionsChanged

/** What a projection (or one of its shards) reads. */
const filterOf = (projection: {
  readonly categories: ReadonlyArray<string> | undefined
  readonly shard?: Partition.Unit | undefined
}): Subscription.Filter =>
  projection.shard === undefined
    ? { categories: projection.categories }
    : { categories: projection.categories, shard: { index: projection.shard.index, count: projection.shard.count } }

/**
 * Fails with `PartitionsChanged` when the store holds shards of the
 * projection (a unit's projection) written with another partition count.
 */
const checkPartitions = (projection: {
  readonly subscriptionId: string
  readonly partitions?: number | undefined
  readonly shard?: Partition.Unit | undefined
}) =>
  Effect.gen(function* () {
    const store = yield* SubscriptionStore.SubscriptionStore
    const projectionId = Partition.projectionIdOf(projection)
    const requested = Partition.countOf(projection)
    const ids = yield* store.shardIds(projectionId)
    if (Option.isNone(Partition.changed(projectionId, requested, ids))) return
    // Another count is stored (rare): which rows hold a checkpoint decides (a checkpoint ahead of the server counts).
    const checkpointed = yield* Effect.filter(ids, (id) =>
      store.readCheckpoint(id).pipe(
        Effect.map(Option.isSome),
        Effect.catchTag("XidAhead", () => Effect.succeed(true))
      )
    )
    const refusal = Partition.contested(projectionId, requested, ids, checkpointed)
    if (Option.isSome(refusal)) return yield* refusal.value
  })

const resolve = (options: Options) => {
  const settings: Settings = { ...defaults, ...options }
  const leaseTtl = Duration.decode(settings.leaseTtl)
  const recheck = Duration.decode(settings.leaseRecheckInterval)
  return {
    workerId: options.workerId,
    pollInterval: settings.pollInterval,
    batchSize: settings.batchSize,
    caughtUpTimeout: settings.caughtUpTimeout,
    leaseTtl,
    recheck,
    heartbeat: Duration.min(recheck, Duration.divide(leaseTtl, 3).pipe(Option.getOrElse(() => leaseTtl))),
    retry: retrySchedule(settings).pipe(Schedule.tapOutput(() => Metric.increment(Metrics.handlerRetries)))
  }
}

type Resolved = ReturnType<typeof resolve>

/** A batch that failed at `index` (a transactional batch is retried whole). */
class BatchFailed<E> extends Data.TaggedClass("BatchFailed")<{ readonly index: number; readonly failure: EventFailure<E> }> {}

/**
 * Hands `batch[from…]` to the handler in one plain loop (no Effect frame per
 * event beyond the handler's own), calling `done(n)` with the events handled
 * when it ends, either way; a failure is classified once, with its index.
 */
const handleFrom = <R, E>(
  projection: Projection.Projection<R, E>,
  batch: ReadonlyArray<RecordedEvent>,
  from: number,
  done: (handled: number) => Effect.Effect<void>,
  divert?: (event: RecordedEvent, index: number) => boolean
): Effect.Effect<void, BatchFailed<E>, R> =>
  Effect.suspend(() => {
    let index = from
    // Events set aside as dead letters (`onFailure: "skip"`) instead of handled.
    let diverted = 0
    return Effect.whileLoop({
      while: () => index < batch.length,
      body: () => {
        if (divert?.(batch[index]!, index)) {
          diverted++
          return Effect.void
        }
        return runOne(projection, batch[index]!)
      },
      step: () => {
        index++
      }
    }).pipe(
      Effect.onExit(() => done(index - from - diverted)),
      Effect.catchAllCause((cause) =>
        Option.match(classify(cause), {
          onNone: () => Effect.interrupt,
          onSome: (failure) => Effect.fail(new BatchFailed({ index, failure }))
        })
      )
    )
  })

const runOne = <R, E>(projection: Projection.Projection<R, E>, event: RecordedEvent): Effect.Effect<void, E | DecodeFailed, R> => {
  const handled = projection.process(event)
  return Either.isRight(handled) ? handled.right : Effect.fail(new DecodeFailed({ error: handled.left }))
}

/** The text a dead letter keeps of why an event failed. */
const failureText = <E>(failure: EventFailure<E>): string =>
  failure._tag === "HandlerDied" ? `HandlerDied: ${DeadLetters.errorText(failure.defect)}` : DeadLetters.errorText(failure.error)

/**
 * The dead-letter side of a leader of an `onFailure: "skip"` projection (see
 * `DeadLetters`): which streams are parked (they have a dead letter), what a
 * batch sets aside, and the redelivery of the dead letters that are due (an
 * operator's `retry`, or events parked behind a discarded or resolved one).
 * Every write is fenced; the leader runs `boundary` before each batch and
 * `redeliver` between batches when the log is quiet, never during a batch.
 *
 * The parked streams are read once per leadership (`parkedAtStart`) and kept
 * here: only the leader records dead letters, so the set only grows by what
 * it parks and shrinks by what it redelivers whole (an operator's discard
 * leaves it larger than the store's, which is safe: the next event of such a
 * stream is parked, due at once, and redelivered in order). While it is
 * empty nothing is due, and `boundary` reads nothing.
 *
 * `stopAt` (a projection that is not `skip`, led while dead letters of its
 * subscription exist): streams with dead letters stay parked and retried
 * ones are redelivered, in order, but an event that keeps failing stops the
 * projection instead of becoming a dead letter.
 */
const skipper = <R, E>(
  projection: Projection.Projection<R, E>,
  store: DeadLetters.DeadLetterStore,
  fence: Lease.Fence,
  config: Resolved,
  attemptOne: (event: RecordedEvent) => Effect.Effect<void, EventFailure<E>, R>,
  handled: (n: number) => Effect.Effect<void>,
  parkedAtStart: ReadonlySet<string>,
  stopAt?: (event: RecordedEvent, attempts: number, failure: EventFailure<E>) => ProjectionFailed<E>
) => {
  const subscriptionId = projection.subscriptionId
  let parked: Set<string> = new Set(parkedAtStart)
  let pending: Array<DeadLetters.NewDeadLetter> = []
  // `due` runs at most once per poll interval (at a batch boundary, or while the log is quiet), and at most a
  // tenth of the time: its cost grows with the streams that have dead letters (one index probe each).
  const dueEvery = Duration.toMillis(Duration.decode(config.pollInterval))
  let dueAt = Number.NEGATIVE_INFINITY
  const counted = Metric.tagged(Metrics.deadLetters, "subscription", subscriptionId)
  const count = (letters: ReadonlyArray<DeadLetters.NewDeadLetter>) =>
    Effect.forEach(
      ["failed", "parked"] as const,
      (status) => {
        const n = letters.filter((l) => l.status === status).length
        return n === 0 ? Effect.void : Metric.incrementBy(Metric.tagged(counted, "status", status), n)
      },
      { discard: true }
    )
  const fenced = <A, X, Y>(effect: Effect.Effect<A, X, Y>) => store.fenced(subscriptionId, fence, effect)

  /**
   * Handles the due dead letters, each stream in version order; a stream
   * stops at its first failure, and before a `failed` letter (only an
   * operator's retry redelivers it).
   */
  const redeliver: Effect.Effect<void, Lease.LeaseLost | StoreError, R> = Effect.gen(function* () {
    // Nothing parked: no dead letter of this subscription exists (only its leader records them).
    if (parked.size === 0) return
    const start = yield* Clock.currentTimeMillis
    if (start < dueAt) return
    const due = yield* store.due(subscriptionId, config.batchSize)
    dueAt = start + Math.max(dueEvery, 10 * ((yield* Clock.currentTimeMillis) - start))
    const settled = DeadLetters.settled(due, config.batchSize)
    for (const run of DeadLetters.redeliveries(due)) {
      let resolved = true
      for (const { letter, event } of run) {
        // The event left the log (its stream was deleted or truncated): it stays a dead letter, failed with
        // an explanation, and its stream stays parked, until an operator discards it.
        if (Option.isNone(event)) {
          const error = DeadLetters.eventGone(letter)
          yield* Effect.logWarning(`${subscriptionId}: dead letter ${letter.id}: ${error}`)
          yield* fenced(store.failAgain(subscriptionId, letter.id, { error, attempts: 0 }))
          yield* Metric.increment(Metric.tagged(counted, "status", "failed"))
          resolved = false
          break
        }
        const handleAgain: Effect.Effect<
          void,
          { readonly error: EventFailure<E> | Lease.LeaseLost | StoreError; readonly attempts: number },
          R
        > =
          projection.delivery === "transactional"
            ? // The handler's writes and the dead letter's removal commit together, under the fence.
              retryWithAttempts(
                () => fenced(Effect.zipRight(attemptOne(event.value), store.resolve(subscriptionId, letter.id))),
                config.retry,
                (error) => error._tag !== "LeaseLost" && error._tag !== "StoreError"
              )
            : retryWithAttempts(() => attemptOne(event.value), config.retry, () => true)
        const outcome = yield* Effect.either(handleAgain)
        if (Either.isRight(outcome)) {
          if (projection.delivery === "at-least-once") yield* fenced(store.resolve(subscriptionId, letter.id))
          yield* handled(1)
          continue
        }
        const { error, attempts } = outcome.left
        if (error._tag === "LeaseLost" || error._tag === "StoreError") return yield* Effect.fail(error)
        yield* fenced(store.failAgain(subscriptionId, letter.id, { error: failureText(error), attempts }))
        resolved = false
        break
      }
      // Every dead letter of the stream was redelivered: its next events are handled, not parked.
      const streamId = run[0]!.letter.streamId
      if (resolved && settled.has(streamId)) parked.delete(streamId)
    }
  })

  return {
    redeliver,
    /** Before a batch: redelivers what is due (at most once per poll interval; nothing while nothing is parked). */
    boundary: redeliver,
    /** At-least-once: sets an event of a parked stream aside (true) instead of handling it. */
    divert: (event: RecordedEvent): boolean => {
      if (!parked.has(event.streamId)) return false
      pending.push(DeadLetters.parked(event))
      return true
    },
    /** At-least-once: an event failed its retries; it and the rest of its stream are set aside (or, `stopAt`, it stops). */
    fail: (event: RecordedEvent, attempts: number, failure: EventFailure<E>): Effect.Effect<void, ProjectionFailed<E>> =>
      stopAt !== undefined
        ? Effect.fail(stopAt(event, attempts, failure))
        : Effect.sync(() => {
            pending.push(DeadLetters.failed(event, failureText(failure), attempts))
            parked.add(event.streamId)
          }),
    /** At-least-once: records the batch's dead letters (fenced) before its checkpoint passes them. */
    flush: Effect.suspend(() => {
      const letters = pending
      pending = []
      return letters.length === 0
        ? Effect.void
        : Effect.zipRight(fenced(store.record(subscriptionId, letters)), count(letters))
    }),
    /**
     * Transactional: the batch and its checkpoint in one fenced transaction,
     * retried whole; when an event still fails after the retries, the batch
     * is run again with that event (and the rest of its stream) recorded as
     * dead letters in the same transaction instead of handled, so the
     * handler's writes, the dead letters and the checkpoint commit together.
     */
    transactional: (
      leases: LeaseStore.LeaseStore,
      batch: ReadonlyArray<RecordedEvent>,
      checkpoint: Checkpoint.Checkpoint,
      countFailure: Effect.Effect<void>
    ): Effect.Effect<number, Lease.LeaseLost | StoreError | ProjectionFailed<E>, R> => {
      const poisoned = new Map<number, DeadLetters.NewDeadLetter>()
      const attempt = () =>
        Effect.suspend(() => {
          const streams = new Set(parked)
          const letters: Array<DeadLetters.NewDeadLetter> = []
          const divertAt = (event: RecordedEvent, index: number): boolean => {
            const poison = poisoned.get(index)
            if (streams.has(event.streamId)) letters.push(DeadLetters.parked(event))
            else if (poison !== undefined) letters.push(poison)
            else return false
            streams.add(event.streamId)
            return true
          }
          const body = Effect.zipRight(
            handleFrom(projection, batch, 0, () => Effect.void, divertAt),
            Effect.suspend(() => store.record(subscriptionId, letters))
          )
          return Effect.as(leases.commitFenced(subscriptionId, fence, checkpoint, body), { streams, letters })
        }).pipe(Effect.tapError((e) => (e._tag === "BatchFailed" ? countFailure : Effect.void)))
      const round = (): Effect.Effect<number, Lease.LeaseLost | StoreError | ProjectionFailed<E>, R> =>
        retryWithAttempts(attempt, config.retry, (e) => e._tag === "BatchFailed").pipe(
          Effect.matchEffect({
            onFailure: ({ error, attempts }) => {
              if (error._tag !== "BatchFailed") return Effect.fail(error)
              if (stopAt !== undefined) return Effect.fail(stopAt(batch[error.index]!, attempts, error.failure))
              poisoned.set(error.index, DeadLetters.failed(batch[error.index]!, failureText(error.failure), attempts))
              return Effect.suspend(round)
            },
            onSuccess: ({ streams, letters }) => {
              parked = streams
              return Effect.as(count(letters), batch.length - letters.length)
            }
          })
        )
      return round()
    }
  }
}

/**
 * Leads one projection with a held lease until the lease is lost or the
 * projection fails (or `onBatch`, given the events handled so far, says to
 * stop: then it returns that count), or until `handOver` completes: then it
 * stops at the next batch boundary (after a batch's checkpoint, never inside
 * a batch; at once when idle) and returns none.
 */
const lead = <R, E>(
  projection: Projection.Projection<R, E>,
  lease: Lease.LeaseStatus,
  config: Resolved,
  slot: Ref.Ref<Slot<E>>,
  onBatch: (done: number) => Effect.Effect<boolean> = () => Effect.succeed(true),
  handOver: Deferred.Deferred<void> | undefined = undefined
): Effect.Effect<Option.Option<number>, LeaderExit<E>, R | LeaseStore.LeaseStore | SubscriptionStore.SubscriptionStore | Scope.Scope> =>
  Effect.gen(function* () {
    const leases = yield* LeaseStore.LeaseStore
    const subscriptions = yield* SubscriptionStore.SubscriptionStore
    const subscriptionId = projection.subscriptionId
    const fence: Lease.Fence = { workerId: config.workerId, fenceToken: lease.fenceToken }
    // Checked again under the lease: a runner of another count that started meanwhile stops here, before
    // it reads anything (its lease rows and ours: whichever checks second sees the other's).
    yield* checkPartitions(projection)
    const sub = yield* Subscription.make({
      subscriptionId,
      categories: projection.categories,
      shard: projection.shard,
      startFrom: projection.startFrom,
      batchSize: config.batchSize,
      pollInterval: config.pollInterval
    })
    const handled = (n: number) => (n === 0 ? Effect.void : Ref.update(slot, (s) => ({ ...s, handled: s.handled + n })))
    const stop = (event: RecordedEvent, attempts: number, failure: EventFailure<E>) =>
      new ProjectionFailed<E>({ subscriptionId, reason: stoppedAt(event, attempts, failure) })
    const countFailure = Metric.increment(Metrics.handlerFailures)
    /** One attempt at one event, its failure classified (on the retry path only). */
    const attemptOne = (event: RecordedEvent): Effect.Effect<void, EventFailure<E>, R> =>
      runOne(projection, event).pipe(
        Effect.catchAllCause((cause) =>
          Option.match(classify(cause), { onNone: () => Effect.interrupt, onSome: (failure) => Effect.fail(failure) })
        ),
        Effect.tapError(() => countFailure)
      )
    // onFailure "skip" (with a DeadLetterStore, which `validate` checked): what keeps failing becomes a dead letter.
    // Any other projection led while its subscription has dead letters (a replica on another onFailure during a
    // rollout or rollback) keeps their streams parked and redelivers retried ones, in order, and stops at a new
    // failure: never a later event of a parked stream before its dead letters. One read per leadership.
    const deadLetterStore = yield* Effect.serviceOption(DeadLetters.DeadLetterStore)
    const parkedAtStart = Option.isSome(deadLetterStore)
      ? yield* deadLetterStore.value.parkedStreams(subscriptionId)
      : new Set<string>()
    const skips = projection.onFailure === "skip"
    if (!skips && parkedAtStart.size > 0) {
      yield* Effect.logWarning(
        `${subscriptionId} (onFailure "${projection.onFailure ?? "stop"}") has dead letters in ${parkedAtStart.size} stream(s): ` +
          `their events stay parked until the dead letters are retried or discarded (mire dead-letters list ${subscriptionId})`
      )
    }
    const skip =
      Option.isSome(deadLetterStore) && (skips || parkedAtStart.size > 0)
        ? skipper(projection, deadLetterStore.value, fence, config, attemptOne, handled, parkedAtStart, skips ? undefined : stop)
        : undefined
    /** At-least-once: the batch in one loop; a failed event is retried on its own, then the loop goes on after it. */
    const handleAll = (batch: ReadonlyArray<RecordedEvent>, from: number): Effect.Effect<void, ProjectionFailed<E>, R> =>
      Effect.catchAll(handleFrom(projection, batch, from, handled, skip?.divert), ({ index, failure }) =>
        countFailure.pipe(
          Effect.zipRight(
            retryWithAttempts(
              (n): Effect.Effect<void, EventFailure<E>, R> => (n === 1 ? Effect.fail(failure) : attemptOne(batch[index]!)),
              config.retry,
              () => true
            )
          ),
          Effect.zipRight(handled(1)),
          Effect.catchAll(({ error, attempts }) =>
            skip === undefined ? Effect.fail(stop(batch[index]!, attempts, error)) : skip.fail(batch[index]!, attempts, error)
          ),
          Effect.zipRight(Effect.suspend(() => handleAll(batch, index + 1)))
        )
      )
    const refused = (e: Lease.LeaseLost) => Effect.zipRight(Metric.increment(Metrics.fenceRefusals), Effect.fail(e))
    const lost = new Lease.LeaseLost({ subscriptionId, ...fence })

    const inBatch = yield* Effect.makeSemaphore(1)
    // A handover asked for is checked at every batch boundary (the semaphore is not fair: a leader with a
    // backlog would take the permit again before the handover's waiter): after it, no batch starts.
    const atBoundary =
      handOver === undefined ? Effect.void : Effect.flatMap(Deferred.isDone(handOver), (done) => (done ? Effect.never : Effect.void))
    const processBatch = ({ checkpoint, events: batch }: Subscription.Batch) =>
      Effect.gen(function* () {
        if (skip !== undefined) yield* Effect.catchTag(skip.boundary, "LeaseLost", refused)
        if (projection.delivery === "at-least-once") {
          yield* handleAll(batch, 0)
          // Dead letters are recorded (fenced, idempotent) before the checkpoint passes their events.
          if (skip !== undefined) yield* Effect.catchTag(skip.flush, "LeaseLost", refused)
          // One fenced write, atomic on its own: no transaction around it (a single statement on Postgres).
          const written = yield* subscriptions.writeCheckpoint(subscriptionId, checkpoint, Option.some(fence))
          if (!written) return yield* refused(lost)
          return
        }
        // Transactional: the whole batch and its checkpoint commit together, or not at all; a failure
        // rolls the batch back and retries it whole. Only the handler is retried: a StoreError (a COMMIT
        // whose outcome is unknown, a lost connection) ends the leadership instead, and the next one
        // resumes from the persisted checkpoint, so a batch that did commit is never applied twice.
        if (skip !== undefined) {
          return yield* Effect.flatMap(
            Effect.catchTag(skip.transactional(leases, batch, checkpoint, countFailure), "LeaseLost", refused),
            handled
          )
        }
        yield* retryWithAttempts(
          () =>
            leases
              .commitFenced(subscriptionId, fence, checkpoint, handleFrom(projection, batch, 0, () => Effect.void))
              .pipe(Effect.tapError((e) => (e._tag === "BatchFailed" ? countFailure : Effect.void))),
          config.retry,
          (e) => e._tag === "BatchFailed"
        ).pipe(
          Effect.catchAll(({ error, attempts }): Effect.Effect<never, ProjectionFailed<E> | Lease.LeaseLost | StoreError> =>
            error._tag === "BatchFailed"
              ? Effect.fail(stop(batch[error.index]!, attempts, error.failure))
              : error._tag === "LeaseLost"
                ? refused(error)
                : Effect.fail(error)
          )
        )
        yield* handled(batch.length)
      }).pipe(
        Effect.withSpan("ProjectionRunner.batch", {
          attributes: {
            "mire.subscription_id": subscriptionId,
            "mire.batch_size": batch.length,
            "mire.fence_token": lease.fenceToken.toString()
          }
        })
      )

    // The next batch is polled while this one is handled and checkpointed (each carries its own
    // checkpoint): a poll's round trip overlaps the handler's and the checkpoint's, never their order.
    const work = sub.checkpointed.pipe(
      Stream.buffer({ capacity: 1 }),
      Stream.mapEffect((batch) => {
        const size = batch.events.length
        // Handled and checkpointed: its array is let go of (see `releaseEvents`).
        return Effect.zipRight(atBoundary, Effect.as(inBatch.withPermits(1)(processBatch(batch)), size)).pipe(
          Effect.tap(() => releaseEvents(batch.events))
        )
      }),
      Stream.scan(0, (done, n) => done + n),
      Stream.drop(1),
      Stream.mapEffect((done) => Effect.map(onBatch(done), (more) => ({ done, more }))),
      Stream.takeUntil(({ more }) => !more),
      Stream.runLast,
      Effect.map(Option.map(({ done }) => done))
    )
    const heartbeat = leases.renew(subscriptionId, fence, config.leaseTtl).pipe(
      Effect.withSpan("Lease.renew", {
        attributes: { "mire.subscription_id": subscriptionId, "mire.fence_token": lease.fenceToken.toString() }
      }),
      Effect.flatMap((held) => (held ? Effect.void : Effect.fail(lost))),
      // The lease was just acquired for a full ttl: the first renewal is one heartbeat later.
      Effect.schedule(Schedule.spaced(config.heartbeat)),
      Effect.zipRight(Effect.never)
    )
    // A handover waits for the batch in hand (handler and checkpoint) to end, then keeps the next one out.
    const handedOver =
      handOver === undefined ? Effect.never : Effect.zipRight(Deferred.await(handOver), inBatch.take(1)).pipe(Effect.as(Option.none<number>()))
    // Dead letters marked for retry are redelivered between batches also while the log is quiet.
    const watch =
      skip === undefined
        ? heartbeat
        : Effect.raceFirst(
            heartbeat,
            Effect.zipRight(atBoundary, inBatch.withPermits(1)(Effect.catchTag(skip.redeliver, "LeaseLost", refused))).pipe(
              Effect.schedule(Schedule.spaced(config.pollInterval)),
              Effect.zipRight(Effect.never)
            )
          )
    return yield* Effect.raceFirst(Effect.raceFirst(work, watch), handedOver)
  })

/** Runs `use` while holding the projection's lease (acquired and released as a scoped resource). */
const withLease = <A, E, R>(
  subscriptionId: string,
  config: Resolved,
  use: (lease: Lease.LeaseStatus) => Effect.Effect<A, E, R>
): Effect.Effect<Option.Option<A>, E | StoreError, R | LeaseStore.LeaseStore> =>
  Effect.scoped(
    Effect.gen(function* () {
      const leases = yield* LeaseStore.LeaseStore
      const attributes = { "mire.subscription_id": subscriptionId, "mire.worker_id": config.workerId }
      const lease = yield* Effect.acquireRelease(
        leases
          .acquire(subscriptionId, config.workerId, config.leaseTtl)
          .pipe(Effect.withSpan("Lease.acquire", { attributes })),
        (held) =>
          Option.match(held, {
            onNone: () => Effect.void,
            onSome: (l) =>
              leases.release(subscriptionId, { workerId: config.workerId, fenceToken: l.fenceToken }).pipe(
                Effect.withSpan("Lease.release", { attributes: { ...attributes, "mire.fence_token": l.fenceToken.toString() } }),
                Effect.ignore
              )
          })
      )
      if (Option.isNone(lease)) return Option.none()
      yield* Metric.increment(Metrics.leaseAcquired)
      return Option.some(yield* use(lease.value))
    })
  )

/**
 * What the store records of a stopped projection, for status in every
 * process: the log's own error as `Tag: message` when the log refused to go
 * on, the `ProjectionFailed` otherwise.
 */
const recordedAs = <E>(failure: ProjectionFailed<E>): string =>
  failure.reason._tag === "SubscriptionFailed"
    ? `${failure.reason.error._tag}: ${failure.reason.error.message}`
    : `${failure._tag}: ${failure.message}`

/** A defect in the runner or a store must not end a supervisor silently: the projection stops, visibly. */
const diedAs =
  <E>(subscriptionId: string) =>
  (defect: unknown) =>
    Effect.fail(new ProjectionFailed<E>({ subscriptionId, reason: FailureReason.Died({ defect }) }))

/**
 * One leadership of a unit whose lease this runner just acquired: it leads
 * until the lease is lost, the projection fails, or `handOver` completes
 * (then it stops at the next batch boundary); the lease is released when it
 * ends, however it ends, and {@link afterLeadership} reads the outcome: the
 * unit stands by (the coordinator may acquire it again) or stops, failed.
 */
const leadership = <R, E>(
  projection: Projection.Projection<R, E>,
  config: Resolved,
  slot: Ref.Ref<Slot<E>>,
  lease: Lease.LeaseStatus,
  handOver: Deferred.Deferred<void>
): Effect.Effect<void, never, R | LeaseStore.LeaseStore | SubscriptionStore.SubscriptionStore> => {
  const subscriptionId = projection.subscriptionId
  const attributes = { "mire.subscription_id": subscriptionId, "mire.fence_token": lease.fenceToken.toString() }
  return Effect.gen(function* () {
    const leases = yield* LeaseStore.LeaseStore
    const release = leases
      .release(subscriptionId, { workerId: config.workerId, fenceToken: lease.fenceToken })
      .pipe(Effect.withSpan("Lease.release", { attributes }), Effect.ignore)
    yield* Ref.update(slot, (s) => ({ ...s, state: "leader" as const, fenceToken: Option.some(lease.fenceToken) }))
    const outcome = yield* Effect.scoped(lead(projection, lease, config, slot, undefined, handOver)).pipe(
      Effect.catchAllDefect(diedAs<E>(subscriptionId)),
      Effect.either,
      Effect.ensuring(release)
    )
    const toStandBy = Ref.update(slot, (s) => ({ ...s, state: "standby" as const, fenceToken: Option.none() }))
    if (Either.isRight(outcome) && (yield* Deferred.isDone(handOver))) {
      yield* Metric.increment(Metrics.leaseHandovers)
      yield* Effect.logDebug(`projection ${subscriptionId}: handed over`)
      return yield* toStandBy
    }
    yield* Next.$match(afterLeadership(subscriptionId, outcome), {
      Lead: () => toStandBy,
      StandBy: ({ why, error }) =>
        Effect.zipRight(
          Option.match(error, {
            onNone: () => Effect.void,
            onSome: (e) =>
              Effect.zipRight(
                e._tag === "LeaseLost" ? Metric.increment(Metrics.leaseLost) : Effect.void,
                Effect.logWarning(`projection ${subscriptionId}: ${why} (${e.message}); standing by`)
              )
          }),
          toStandBy
        ),
      Stop: ({ failure }) =>
        Effect.all(
          [
            Effect.logError(failure.message, failure.cause),
            // For status, in every process: the store keeps it until the next checkpoint or reset.
            SubscriptionStore.SubscriptionStore.pipe(
              Effect.flatMap((store) => store.recordFailure(subscriptionId, recordedAs(failure))),
              Effect.ignore
            ),
            Ref.update(slot, (s) => ({ ...s, state: "failed" as const, fenceToken: Option.none(), failure: Option.some(failure) }))
          ],
          { discard: true }
        )
    })
  }).pipe(Effect.annotateLogs({ subscription: subscriptionId, worker: config.workerId }))
}

/**
 * The lease-state look of a runner without a `WorkerStore`: only itself
 * live, each unit's lease read on its own, time from `Clock` (the lease
 * store still decides every acquisition on its own clock).
 */
const lookAlone = (workerId: string, ids: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const leases = yield* LeaseStore.LeaseStore
    const now = yield* Clock.currentTimeMillis
    const found = yield* Effect.forEach(ids, (id) => leases.status(id))
    return {
      now: new Date(now),
      workers: [{ workerId, startedAt: new Date(now), heartbeatAt: new Date(now) }],
      leases: found.flatMap((l) => (Option.isSome(l) ? [l.value] : []))
    } satisfies WorkerStore.Observation
  })

/**
 * The spread of units across the live workers at a runner's last look:
 * the fair share, and each live worker with the units it leads (by their
 * leases), this runner included.
 *
 * @since 0.2.0
 * @category models
 */
export interface Balance {
  /** When the runner last looked (the store's clock); the epoch before its first look. */
  readonly observedAt: Date
  /** `⌈units ÷ live workers⌉`. */
  readonly share: number
  readonly workers: ReadonlyArray<{ readonly workerId: string; readonly leads: ReadonlyArray<string> }>
}

/**
 * The balance shown by a {@link Rebalance.decide} look.
 */
const balanceOf = (seen: WorkerStore.Observation, decision: Rebalance.Decision, me: string): Balance => {
  const now = seen.now.getTime()
  const ids = new Set([me, ...seen.workers.map((w) => w.workerId)])
  const leads = new Map(Array.from(ids, (id) => [id, [] as Array<string>]))
  for (const lease of seen.leases) {
    const holder = Rebalance.holderAt(lease, now)
    if (holder !== null) {
      if (!leads.has(holder)) leads.set(holder, [])
      leads.get(holder)!.push(lease.subscriptionId)
    }
  }
  return {
    observedAt: seen.now,
    share: decision.share,
    workers: Array.from(leads, ([workerId, units]) => ({ workerId, leads: units.sort() })).sort((a, b) =>
      a.workerId < b.workerId ? -1 : a.workerId > b.workerId ? 1 : 0
    )
  }
}

/**
 * The runner's coordinator, forked into the current scope: every
 * `leaseRecheckInterval` it looks (one `WorkerStore.observe`: heartbeat,
 * live workers, every unit's lease), takes the pure decision of
 * {@link Rebalance.decide}, asks the leaderships beyond its fair share to
 * hand over at their next batch boundary, and acquires the free units the
 * decision gives it (one conditional write each), each then led in its own
 * fiber of `fibers`. Returns the last look's {@link Balance}.
 */
const coordinate = <R, E>(
  entries: ReadonlyArray<{ readonly projection: Projection.Projection<R, E>; readonly slot: Ref.Ref<Slot<E>> }>,
  config: Resolved,
  fibers: FiberMap.FiberMap<string>,
  workerStore: Option.Option<WorkerStore.WorkerStore>
): Effect.Effect<
  Effect.Effect<Balance>,
  never,
  R | Scope.Scope | LeaseStore.LeaseStore | SubscriptionStore.SubscriptionStore
> =>
  Effect.gen(function* () {
    const leases = yield* LeaseStore.LeaseStore
    const ids = entries.map((e) => e.projection.subscriptionId)
    const byId = new Map(entries.map((e) => [e.projection.subscriptionId, e] as const))
    const handOvers = new Map<string, Deferred.Deferred<void>>()
    let freeBefore: ReadonlySet<string> = new Set()
    // Set first when the runner's scope closes (its finalizer is added after the coordinator's fork).
    let closing = false
    // A worker beats once per look: with a recheck as long as the ttl or longer, counting it live for the ttl
    // only would make it flap dead and alive between its looks, and its units with it.
    const liveFor = Duration.max(config.leaseTtl, Duration.times(config.recheck, 2))
    const balance = yield* Ref.make<Balance>({ observedAt: new Date(0), share: 0, workers: [] })
    const look = Option.match(workerStore, {
      onNone: () => lookAlone(config.workerId, ids),
      // A database not migrated to the workers table yet (a rolling upgrade): the runner looks alone meanwhile.
      onSome: (store) =>
        store
          .observe(config.workerId, liveFor, ids)
          .pipe(Effect.catchIf((e) => e.kind === "NotMigrated", () => lookAlone(config.workerId, ids)))
    }).pipe(Effect.withSpan("ProjectionRunner.look", { attributes: { "mire.worker_id": config.workerId, "mire.units": ids.length } }))
    /**
     * Acquires a unit and starts leading it; the lease and its fiber start together or not at all. Only the
     * acquire can be interrupted (a row lock or a busy pool must not hold up a stop): interrupted mid-way, a
     * lease it may have taken lapses after the ttl, as after a crash. Once the runner is stopping, no
     * leadership starts: a lease acquired meanwhile is released at once.
     */
    const tryLead = (id: string) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function* () {
          const entry = byId.get(id)!
          if (closing) return
          const held = yield* restore(
            leases
              .acquire(id, config.workerId, config.leaseTtl)
              .pipe(Effect.withSpan("Lease.acquire", { attributes: { "mire.subscription_id": id, "mire.worker_id": config.workerId } }))
          )
          if (Option.isNone(held)) return
          if (closing) return yield* Effect.ignore(leases.release(id, { workerId: config.workerId, fenceToken: held.value.fenceToken }))
          yield* Metric.increment(Metrics.leaseAcquired)
          const handOver = yield* Deferred.make<void>()
          handOvers.set(id, handOver)
          yield* FiberMap.run(
            fibers,
            id,
            leadership(entry.projection, config, entry.slot, held.value, handOver).pipe(
              Effect.ensuring(Effect.sync(() => (handOvers.get(id) === handOver ? void handOvers.delete(id) : undefined)))
            )
          )
        })
      )
    const round = Effect.gen(function* () {
      const seen = yield* look
      const states = yield* Effect.forEach(entries, (e) => Ref.get(e.slot))
      const leaseOf = new Map(seen.leases.map((l) => [l.subscriptionId, l] as const))
      const decision = Rebalance.decide({
        me: config.workerId,
        now: seen.now.getTime(),
        workers: seen.workers.map((w) => w.workerId),
        units: entries.map((e) => ({
          id: e.projection.subscriptionId,
          lease: leaseOf.get(e.projection.subscriptionId)
        })),
        leading: new Set(handOvers.keys()),
        excluded: new Set(entries.flatMap((e, i) => (states[i]!.state === "failed" ? [e.projection.subscriptionId] : []))),
        freeBefore
      })
      freeBefore = decision.free
      yield* Ref.set(balance, balanceOf(seen, decision, config.workerId))
      for (const id of decision.handOver) {
        const handOver = handOvers.get(id)
        if (handOver !== undefined) yield* Deferred.succeed(handOver, undefined)
      }
      yield* Effect.forEach(decision.acquire, tryLead, { discard: true })
    })
    yield* round.pipe(
      // A failing look (the store unreachable) is retried at the next recheck; the leaderships go on meanwhile.
      Effect.catchAllCause((cause) =>
        Cause.isInterruptedOnly(cause) ? Effect.failCause(cause) : Effect.logWarning("projection runner: look failed; retrying", cause)
      ),
      Effect.repeat(Schedule.spaced(config.recheck)),
      Effect.annotateLogs({ worker: config.workerId }),
      Effect.forkScoped
    )
    // Added after the fork, so it runs before the coordinator is interrupted.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closing = true
      })
    )
    return Ref.get(balance)
  })

/** `onFailure` is `"stop"` or `"skip"`, and `"skip"` has a `DeadLetterStore` to write to. */
const validateOnFailure = (projection: { readonly subscriptionId: string; readonly onFailure?: Projection.OnFailure | undefined }) =>
  Effect.gen(function* () {
    const onFailure: unknown = projection.onFailure
    if (onFailure !== undefined && onFailure !== "stop" && onFailure !== "skip") {
      return yield* new InvalidInput({ field: "onFailure", reason: `${String(onFailure)} is not "stop" or "skip"` })
    }
    if (onFailure === "skip" && Option.isNone(yield* Effect.serviceOption(DeadLetters.DeadLetterStore))) {
      return yield* new InvalidInput({
        field: "onFailure",
        reason: `${projection.subscriptionId} skips failing events, which needs a DeadLetterStore (PgStore.layer, InMemory.layer or DeadLetters.layerMemory)`
      })
    }
  })

/**
 * Checks what `run` is given before anything starts: one projection per
 * subscription id, and valid batch sizes.
 */
const validate = <R, E>(projections: ReadonlyArray<Projection.Projection<R, E>>, config: Resolved) =>
  Effect.gen(function* () {
    if (!Number.isSafeInteger(config.batchSize) || config.batchSize < 1) {
      return yield* new InvalidInput({ field: "batchSize", reason: `${config.batchSize} is not a positive integer` })
    }
    const seen = new Set<string>()
    for (const projection of projections) {
      yield* validateOnFailure(projection)
      yield* Partition.validateCount(Partition.countOf(projection))
      for (const unit of Partition.units(projection)) {
        yield* SubscriptionId.validate(unit.subscriptionId)
        if (seen.has(unit.subscriptionId)) {
          return yield* new InvalidInput({
            field: "subscriptionId",
            reason: `${unit.subscriptionId} is given to more than one projection`
          })
        }
        seen.add(unit.subscriptionId)
      }
    }
  })

/**
 * Starts the projections, each in its own fiber in a `FiberMap` keyed by
 * subscription id, in the current scope; closing the scope stops them and
 * releases their leases. Two projections with one subscription id fail with
 * `InvalidInput` before anything starts.
 *
 * @example
 * ```ts
 * import { Aggregate, Projection, ProjectionRunner } from "@mire/core"
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
 * const Balances = Projection.atLeastOnce({ subscriptionId: "balances", aggregate: Account, handle: () => Effect.void })
 *
 * // The projections run until the scope closes, which releases their leases.
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const runner = yield* ProjectionRunner.run([Balances], { workerId: "replica-a" })
 *     yield* Effect.log(yield* runner.status)
 *   })
 * )
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const run = <R, E = unknown>(
  projections: ReadonlyArray<Projection.Projection<R, E>>,
  options: Options
): Effect.Effect<
  ProjectionRunner<E>,
  InvalidInput,
  R | Scope.Scope | LeaseStore.LeaseStore | SubscriptionStore.SubscriptionStore
> =>
  Effect.gen(function* () {
    const config = resolve(options)
    yield* validate(projections, config)
    const subscriptions = yield* SubscriptionStore.SubscriptionStore
    const leases = yield* LeaseStore.LeaseStore
    const workerStore = yield* Effect.serviceOption(WorkerStore.WorkerStore)
    // Registered before the leaderships' fibers, so it runs after they ended and released their leases.
    yield* Option.match(workerStore, {
      onNone: () => Effect.void,
      onSome: (store) => Effect.addFinalizer(() => Effect.ignore(store.leave(config.workerId)))
    })
    const fibers = yield* FiberMap.make<string>()
    // A partitioned projection runs as one unit per shard, each under its own subscription id and lease.
    const units = projections.flatMap(Partition.units)
    const shardsOf = new Map(
      projections.flatMap((p) =>
        Partition.countOf(p) > 1 ? [[p.subscriptionId, Partition.units(p).map((u) => u.subscriptionId)] as const] : []
      )
    )
    const entries = yield* Effect.forEach(units, (projection) =>
      Effect.map(Ref.make<Slot<E>>(standby), (slot) => ({ projection, slot }))
    )
    const slots = new Map(entries.map((entry) => [entry.projection.subscriptionId, entry] as const))
    const balance = yield* coordinate(entries, config, fibers, workerStore)
    const lagOf = (projection: Projection.Projection<R, E>) =>
      Effect.flatMap(subscriptions.readCheckpoint(projection.subscriptionId), (cp) =>
        subscriptions.lag(
          filterOf(projection),
          Option.match(cp, { onNone: () => Cursor.start, onSome: (c) => c.cursor })
        )
      ).pipe(
        Effect.tap((lag) =>
          Metric.set(Metric.tagged(Metrics.subscriptionLag, "subscription", projection.subscriptionId), lag.events)
        )
      )
    const noLag: SubscriptionStore.Lag = { events: 0, ageMillis: 0, oldestTransactionMillis: 0 }
    const deadLetterStore = yield* Effect.serviceOption(DeadLetters.DeadLetterStore)
    const deadLettersOf = (subscriptionId: string) =>
      Option.match(deadLetterStore, {
        onNone: () => Effect.succeed(DeadLetters.noCounts),
        onSome: (store) => Effect.map(store.counts, (counts) => counts.get(subscriptionId) ?? DeadLetters.noCounts)
      })
    const status = Effect.forEach(entries, ({ projection, slot }) =>
      Effect.all({
        s: Ref.get(slot),
        lease: leases.status(projection.subscriptionId),
        // A log or checkpoint ahead of the server's xids (a restore) fails this projection's row, not the call.
        lag: lagOf(projection).pipe(
          Effect.map(Either.right),
          Effect.catchTag("XidAhead", (ahead) => Effect.succeed(Either.left(ahead)))
        ),
        report: subscriptions.report(projection.subscriptionId),
        deadLetters: deadLettersOf(projection.subscriptionId)
      }).pipe(
        Effect.map(({ s, lease, lag, report, deadLetters }): ProjectionStatus<E> => {
          const common = {
            subscriptionId: projection.subscriptionId,
            workerId: config.workerId,
            fenceToken: s.fenceToken,
            lease,
            handled: s.handled,
            recordedFailure: Option.flatMap(report, (r) => r.failure),
            deadLetters
          }
          return Either.match(lag, {
            onLeft: (error) => ({
              ...common,
              state: "failed",
              lag: noLag,
              failure: Option.orElse(s.failure, () =>
                Option.some(
                  new ProjectionFailed<E>({ subscriptionId: projection.subscriptionId, reason: FailureReason.SubscriptionFailed({ error }) })
                )
              )
            }),
            onRight: (lag) => ({ ...common, state: s.state, lag, failure: s.failure })
          })
        })
      )
    )
    const waitFor = (
      subscriptionId: string,
      timeout: Duration.DurationInput = config.caughtUpTimeout
    ): Effect.Effect<void, ProjectionFailed<E> | NotCaughtUp | StoreError | InvalidInput | XidAhead> => {
      const entry = slots.get(subscriptionId)
      if (entry === undefined) {
        return Effect.fail(new InvalidInput({ field: "subscriptionId", reason: `${subscriptionId} is not run by ${config.workerId}` }))
      }
      // A stopped projection fails the wait at once, however long `timeout` is.
      const check = Effect.flatMap(Ref.get(entry.slot), (s): Effect.Effect<SubscriptionStore.Lag, ProjectionFailed<E> | StoreError | XidAhead> =>
        Option.match(s.failure, { onSome: Effect.fail, onNone: () => lagOf(entry.projection) })
      )
      return check.pipe(
        Effect.repeat({ schedule: Schedule.spaced(caughtUpPoll), until: (lag) => lag.events === 0 }),
        Effect.timeoutTo({
          duration: timeout,
          onSuccess: () => Effect.void,
          onTimeout: () =>
            Effect.flatMap(
              lagOf(entry.projection),
              (lag) =>
                new NotCaughtUp({ subscriptionId, lag: lag.events, timeout: Duration.format(Duration.decode(timeout)) })
            )
        }),
        Effect.flatten
      )
    }
    // A partitioned projection's own id waits for every shard.
    const whenCaughtUp = (subscriptionId: string, timeout?: Duration.DurationInput) => {
      const shards = shardsOf.get(subscriptionId)
      return shards === undefined
        ? waitFor(subscriptionId, timeout)
        : Effect.forEach(shards, (id) => waitFor(id, timeout), { concurrency: "unbounded", discard: true })
    }
    return { workerId: config.workerId, status, whenCaughtUp, balance }
  })

/**
 * The runner as a layer: its scope owns every projection's fiber.
 *
 * @example
 * ```ts
 * import { Aggregate, Projection, ProjectionRunner } from "@mire/core"
 * import { Effect, Schema } from "effect"
 * import { hostname } from "node:os"
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
 * const Balances = Projection.atLeastOnce({ subscriptionId: "balances", aggregate: Account, handle: () => Effect.void })
 * const Owners = Projection.atLeastOnce({ subscriptionId: "owners", aggregate: Account, handle: () => Effect.void })
 *
 * const Live = ProjectionRunner.layer([Balances, Owners], { workerId: hostname() })
 * ```
 * @since 0.1.0
 * @category layers
 */
export const layer = <R, E = unknown>(
  projections: ReadonlyArray<Projection.Projection<R, E>>,
  options: Options
): Layer.Layer<ProjectionRunner, InvalidInput, R | LeaseStore.LeaseStore | SubscriptionStore.SubscriptionStore> =>
  Layer.scoped(ProjectionRunner, run(projections, options))

/**
 * Rebuild progress.
 *
 * @since 0.1.0
 * @category models
 */
export interface Progress {
  readonly done: number
  readonly total: number
}

/**
 * Rebuilds a projection from scratch: takes its lease (waiting for it),
 * resets its checkpoint to the start, and handles every event up to the head
 * as of the start, reporting progress after each batch. Give it a new
 * subscription id to rebuild beside the live one.
 *
 * A partitioned projection rebuilds its shards in parallel (progress is
 * their sum). Rebuilding is how its partition count changes: once it holds
 * every shard's lease of the new count, it deletes the checkpoints of any
 * other count (waiting, rechecking, while a live lease holds one: stop the
 * runners of the old count), then replays each shard from the start.
 *
 * @example
 * ```ts
 * import { Aggregate, Projection, ProjectionRunner } from "@mire/core"
 * import { Console, Effect, Schema } from "effect"
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
 * // A new subscription id: the rebuild runs beside the live "balances" projection.
 * const BalancesV2 = Projection.atLeastOnce({ subscriptionId: "balances-v2", aggregate: Account, handle: () => Effect.void })
 *
 * const program = ProjectionRunner.rebuild(BalancesV2, { workerId: "rebuilder" }, (p) => Console.log(`${p.done}/${p.total}`))
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const rebuild = <R, E = unknown>(
  projection: Projection.Projection<R, E>,
  options: Options,
  onProgress: (progress: Progress) => Effect.Effect<void> = () => Effect.void
): Effect.Effect<Progress, LeaderExit<E>, R | LeaseStore.LeaseStore | SubscriptionStore.SubscriptionStore> =>
  Effect.gen(function* () {
    const config = resolve(options)
    yield* validate([projection], config)
    const subscriptions = yield* SubscriptionStore.SubscriptionStore
    const leases = yield* LeaseStore.LeaseStore
    const units = Partition.units(projection)
    const count = Partition.countOf(projection)
    // Progress is the sum over the shards, reported once every shard knows its total.
    const progress = yield* Ref.make(new Map<string, Progress>())
    const report = (unitId: string, p: Progress) =>
      Effect.flatMap(Ref.updateAndGet(progress, (m) => new Map(m).set(unitId, p)), (m) => {
        if (m.size < units.length) return Effect.void
        let done = 0
        let total = 0
        for (const q of m.values()) {
          done += q.done
          total += q.total
        }
        return onProgress({ done, total })
      })
    const acquired = yield* Effect.forEach(units, () => Deferred.make<void>())
    const cleared = yield* Deferred.make<void>()
    // Once this count's every shard is leased and reset here (so its rows hold checkpoints and a runner of
    // another count that leads one from now on refuses to start), the rows of other counts are deleted; those a live
    // lease holds (a runner of the old count still running) are waited for, rechecking.
    const clearObsolete = Effect.gen(function* () {
      yield* Effect.forEach(acquired, Deferred.await, { discard: true })
      const left = yield* Effect.flatMap(subscriptions.shardIds(projection.subscriptionId), (ids) =>
        subscriptions.forget(Partition.obsolete(projection.subscriptionId, count, ids))
      )
      if (left.length > 0) {
        yield* Effect.logWarning(
          `rebuild of ${projection.subscriptionId}: waiting for the leases of ${left.join(", ")} (stop the runners of the old partition count)`
        )
      }
      return left.length
    }).pipe(
      Effect.repeat({ until: (left) => left === 0, schedule: Schedule.spaced(config.recheck) }),
      Effect.zipRight(Deferred.succeed(cleared, undefined))
    )
    const rebuildUnit = (unit: Projection.Projection<R, E>, index: number) =>
      Effect.flatMap(Effect.all([Ref.make<Slot<E>>(standby), Ref.make(Option.none<number>())]), ([slot, totalOf]) => {
      const filter = filterOf(unit)
      /** How many of the shard's events are past its checkpoint. */
      const remaining = Effect.flatMap(subscriptions.readCheckpoint(unit.subscriptionId), (checkpoint) =>
        Effect.map(
          subscriptions.lag(filter, Option.match(checkpoint, { onNone: () => Cursor.start, onSome: (c) => c.cursor })),
          (lag) => lag.events
        )
      )
      const attempt = withLease(unit.subscriptionId, config, (lease) =>
        Effect.gen(function* () {
          const fence = { workerId: config.workerId, fenceToken: lease.fenceToken }
          const lost = new Lease.LeaseLost({ subscriptionId: unit.subscriptionId, ...fence })
          if (Option.isSome(yield* Ref.get(totalOf))) {
            // A leadership of this rebuild ended early (a store error): this one resumes from the shard's
            // checkpoint, never from the start again, and ends when the shard has caught up.
            const total = Option.getOrElse(yield* Ref.get(totalOf), () => 0)
            const left = yield* remaining
            if (left === 0) return { done: total, total }
            yield* Effect.scoped(
              lead(unit, lease, config, slot, () =>
                remaining.pipe(
                  Effect.retry(Schedule.spaced(config.recheck).pipe(Schedule.intersect(Schedule.recurs(3)))),
                  Effect.flatMap((n) => Effect.as(report(unit.subscriptionId, { done: Math.max(0, total - n), total }), n > 0)),
                  // The shard's lag cannot be read: go on leading (its next poll fails too, ending this leadership).
                  Effect.orElseSucceed(() => true)
                )
              )
            )
            return { done: total, total }
          }
          // Reset first, then cleared: a runner of the old count that takes a cleared shard meanwhile finds
          // this count checkpointed and refuses.
          const reset = yield* subscriptions.writeCheckpoint(unit.subscriptionId, Checkpoint.at(Cursor.start), Option.some(fence))
          if (!reset) return yield* lost
          yield* Deferred.succeed(acquired[index]!, undefined)
          // The lease is renewed while the other counts' rows are cleared.
          const hold = leases.renew(unit.subscriptionId, fence, config.leaseTtl).pipe(
            Effect.flatMap((held) => (held ? Effect.void : Effect.fail(lost))),
            Effect.schedule(Schedule.spaced(config.heartbeat)),
            Effect.zipRight(Effect.never)
          )
          yield* Effect.raceFirst(Deferred.await(cleared), hold)
          const { events: total } = yield* subscriptions.lag(filter, Cursor.start)
          yield* Ref.set(totalOf, Option.some(total))
          yield* report(unit.subscriptionId, { done: 0, total })
          if (total === 0) return { done: 0, total }
          const done = yield* Effect.scoped(
            lead(unit, lease, config, slot, (done) =>
              Effect.as(report(unit.subscriptionId, { done: Math.min(done, total), total }), done < total)
            )
          )
          return { done: Math.min(Option.getOrElse(done, () => 0), total), total }
        })
      )
      // Another worker holds the lease: try again after each recheck interval until this one leads. A store
      // error (a lost connection, a cancelled statement) ends a leadership, as in `run`: the next one resumes
      // from the shard's checkpoint, up to 10 times.
      return Effect.repeat(
        Effect.tap(attempt, (led) => (Option.isNone(led) ? Effect.sleep(config.recheck) : Effect.void)),
        { until: (led): led is Option.Some<Progress> => Option.isSome(led) }
      ).pipe(
        Effect.retry({ while: (e) => e._tag === "StoreError", times: 10, schedule: Schedule.spaced(config.recheck) }),
        Effect.map((led) => led.value)
      )
    })
    const [, done] = yield* Effect.all(
      [clearObsolete, Effect.forEach(units, rebuildUnit, { concurrency: "unbounded" })],
      { concurrency: "unbounded" }
    )
    return done.reduce((sum, p) => ({ done: sum.done + p.done, total: sum.total + p.total }), { done: 0, total: 0 })
  })
