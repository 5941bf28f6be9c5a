/**
 * The projection runner: each projection runs in its own supervised fiber,
 * owned by the runner's scope. A fiber stands by until it acquires its
 * subscription's lease (a Scope-managed resource: released when leadership
 * ends, so a follower can take over at once), then leads: it polls, hands
 * events to the handler (retrying with a `Schedule`), and checkpoints under
 * the fence, while a heartbeat renews the lease. Losing the lease interrupts
 * the work and returns the fiber to standby. A handler that keeps failing
 * stops its projection with a `ProjectionFailed` naming the event (never
 * skipping it); other projections keep running.
 *
 * Failover: a leader that dies without releasing is replaced within
 * `leaseTtl + leaseRecheckInterval`.
 *
 * The decisions are pure functions ({@link afterLeadership}, {@link classify},
 * {@link stoppedAt}); the supervisor repeats a leadership on a `Schedule`
 * and its fibers live in a `FiberMap` keyed by subscription id. A leader
 * hands each batch to the handler in one loop and polls the next batch
 * meanwhile; each batch carries the checkpoint taken right after its poll,
 * so a checkpoint never covers an event the handler has not finished.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
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
import {
  type EventDecodeError,
  InvalidInput,
  type MissingVersion,
  type OrderingViolation,
  type StoreError,
  type XidAhead
} from "./EventStoreError.js"
import * as Lease from "./Lease.js"
import * as Metrics from "./Metrics.js"
import type * as Projection from "./Projection.js"
import type { RecordedEvent } from "./RecordedEvent.js"
import * as Subscription from "./Subscription.js"
import * as Checkpoint from "./Checkpoint.js"
import * as LeaseStore from "./LeaseStore.js"
import * as SubscriptionStore from "./SubscriptionStore.js"

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
  SubscriptionFailed: { readonly error: OrderingViolation | MissingVersion | XidAhead | InvalidInput }
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
  /** How often a follower tries to acquire (and how long a leader that lost its lease or its store waits). */
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
export type LeaderOutcome<E> = Either.Either<
  Option.Option<unknown>,
  ProjectionFailed<E> | OrderingViolation | MissingVersion | XidAhead | Lease.LeaseLost | StoreError | InvalidInput
>

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

type LeaderExit<E> = ProjectionFailed<E> | OrderingViolation | MissingVersion | XidAhead | Lease.LeaseLost | StoreError | InvalidInput

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
  done: (handled: number) => Effect.Effect<void>
): Effect.Effect<void, BatchFailed<E>, R> =>
  Effect.suspend(() => {
    let index = from
    return Effect.whileLoop({
      while: () => index < batch.length,
      body: () => runOne(projection, batch[index]!),
      step: () => {
        index++
      }
    }).pipe(
      Effect.onExit(() => done(index - from)),
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

/**
 * Leads one projection with a held lease until the lease is lost or the
 * projection fails (or `onBatch`, given the events handled so far, says to
 * stop: then it returns that count).
 */
const lead = <R, E>(
  projection: Projection.Projection<R, E>,
  lease: Lease.LeaseStatus,
  config: Resolved,
  slot: Ref.Ref<Slot<E>>,
  onBatch: (done: number) => Effect.Effect<boolean> = () => Effect.succeed(true)
): Effect.Effect<Option.Option<number>, LeaderExit<E>, R | LeaseStore.LeaseStore | SubscriptionStore.SubscriptionStore | Scope.Scope> =>
  Effect.gen(function* () {
    const leases = yield* LeaseStore.LeaseStore
    const subscriptions = yield* SubscriptionStore.SubscriptionStore
    const subscriptionId = projection.subscriptionId
    const fence: Lease.Fence = { workerId: config.workerId, fenceToken: lease.fenceToken }
    const sub = yield* Subscription.make({
      subscriptionId,
      categories: projection.categories,
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
    /** At-least-once: the batch in one loop; a failed event is retried on its own, then the loop goes on after it. */
    const handleAll = (batch: ReadonlyArray<RecordedEvent>, from: number): Effect.Effect<void, ProjectionFailed<E>, R> =>
      Effect.catchAll(handleFrom(projection, batch, from, handled), ({ index, failure }) =>
        countFailure.pipe(
          Effect.zipRight(
            retryWithAttempts(
              (n): Effect.Effect<void, EventFailure<E>, R> => (n === 1 ? Effect.fail(failure) : attemptOne(batch[index]!)),
              config.retry,
              () => true
            )
          ),
          Effect.mapError(({ error, attempts }) => stop(batch[index]!, attempts, error)),
          Effect.zipRight(handled(1)),
          Effect.zipRight(Effect.suspend(() => handleAll(batch, index + 1)))
        )
      )
    const refused = (e: Lease.LeaseLost) => Effect.zipRight(Metric.increment(Metrics.fenceRefusals), Effect.fail(e))
    const lost = new Lease.LeaseLost({ subscriptionId, ...fence })

    const processBatch = ({ checkpoint, events: batch }: Subscription.Batch) =>
      Effect.gen(function* () {
        if (projection.delivery === "at-least-once") {
          yield* handleAll(batch, 0)
          // One fenced write, atomic on its own: no transaction around it (a single statement on Postgres).
          const written = yield* subscriptions.writeCheckpoint(subscriptionId, checkpoint, Option.some(fence))
          if (!written) return yield* refused(lost)
          return
        }
        // Transactional: the whole batch and its checkpoint commit together, or not at all; a failure
        // rolls the batch back and retries it whole. Only the handler is retried: a StoreError (a COMMIT
        // whose outcome is unknown, a lost connection) ends the leadership instead, and the next one
        // resumes from the persisted checkpoint, so a batch that did commit is never applied twice.
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
      Stream.mapEffect((batch) => Effect.as(processBatch(batch), batch.events.length)),
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
    return yield* Effect.raceFirst(work, heartbeat)
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
 * Supervises one projection: a leadership at a time, the decision after it
 * taken by {@link afterLeadership}, repeated on a `Schedule` (at once after
 * `Lead`, after `leaseRecheckInterval` after `StandBy`) until `Stop`.
 */
const supervise = <R, E>(
  projection: Projection.Projection<R, E>,
  config: Resolved,
  slot: Ref.Ref<Slot<E>>
): Effect.Effect<void, never, R | LeaseStore.LeaseStore | SubscriptionStore.SubscriptionStore> => {
  const subscriptionId = projection.subscriptionId
  const round = Effect.gen(function* () {
    yield* Ref.update(slot, (s) => ({ ...s, state: "standby" as const, fenceToken: Option.none() }))
    const outcome = yield* withLease(subscriptionId, config, (lease) =>
      Ref.update(slot, (s) => ({ ...s, state: "leader" as const, fenceToken: Option.some(lease.fenceToken) })).pipe(
        Effect.zipRight(Effect.scoped(lead(projection, lease, config, slot)))
      )
    ).pipe(Effect.catchAllDefect(diedAs<E>(subscriptionId)), Effect.either)
    const next = afterLeadership(subscriptionId, outcome)
    yield* Next.$match(next, {
      Lead: () => Effect.void,
      StandBy: ({ why, error }) =>
        Option.match(error, {
          onNone: () => Effect.void,
          onSome: (e) =>
            Effect.zipRight(
              e._tag === "LeaseLost" ? Metric.increment(Metrics.leaseLost) : Effect.void,
              Effect.logWarning(`projection ${subscriptionId}: ${why} (${e.message}); standing by`)
            )
        }),
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
    return next
  })
  return Effect.repeat(
    round,
    Schedule.identity<Next<E>>().pipe(
      Schedule.whileInput((next) => next._tag !== "Stop"),
      Schedule.addDelay((next) => (next._tag === "Lead" ? Duration.zero : config.recheck))
    )
  ).pipe(Effect.asVoid, Effect.annotateLogs({ subscription: subscriptionId, worker: config.workerId }))
}

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
      if (seen.has(projection.subscriptionId)) {
        return yield* new InvalidInput({
          field: "subscriptionId",
          reason: `${projection.subscriptionId} is given to more than one projection`
        })
      }
      seen.add(projection.subscriptionId)
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
    const fibers = yield* FiberMap.make<string>()
    const entries = yield* Effect.forEach(projections, (projection) =>
      Effect.map(Ref.make<Slot<E>>(standby), (slot) => ({ projection, slot }))
    )
    const slots = new Map(entries.map((entry) => [entry.projection.subscriptionId, entry] as const))
    yield* Effect.forEach(entries, ({ projection, slot }) => FiberMap.run(fibers, projection.subscriptionId, supervise(projection, config, slot)), {
      discard: true
    })
    const lagOf = (projection: Projection.Projection<R, E>) =>
      Effect.flatMap(subscriptions.readCheckpoint(projection.subscriptionId), (cp) =>
        subscriptions.lag(
          { categories: projection.categories },
          Option.match(cp, { onNone: () => Cursor.start, onSome: (c) => c.cursor })
        )
      ).pipe(
        Effect.tap((lag) =>
          Metric.set(Metric.tagged(Metrics.subscriptionLag, "subscription", projection.subscriptionId), lag.events)
        )
      )
    const noLag: SubscriptionStore.Lag = { events: 0, ageMillis: 0, oldestTransactionMillis: 0 }
    const status = Effect.forEach(entries, ({ projection, slot }) =>
      Effect.all({
        s: Ref.get(slot),
        lease: leases.status(projection.subscriptionId),
        // A log or checkpoint ahead of the server's xids (a restore) fails this projection's row, not the call.
        lag: lagOf(projection).pipe(
          Effect.map(Either.right),
          Effect.catchTag("XidAhead", (ahead) => Effect.succeed(Either.left(ahead)))
        ),
        report: subscriptions.report(projection.subscriptionId)
      }).pipe(
        Effect.map(({ s, lease, lag, report }): ProjectionStatus<E> => {
          const common = {
            subscriptionId: projection.subscriptionId,
            workerId: config.workerId,
            fenceToken: s.fenceToken,
            lease,
            handled: s.handled,
            recordedFailure: Option.flatMap(report, (r) => r.failure)
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
    const whenCaughtUp = (subscriptionId: string, timeout: Duration.DurationInput = config.caughtUpTimeout) => {
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
    return { workerId: config.workerId, status, whenCaughtUp }
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
    const slot = yield* Ref.make<Slot<E>>(standby)
    const attempt = withLease(projection.subscriptionId, config, (lease) =>
      Effect.gen(function* () {
        const fence = { workerId: config.workerId, fenceToken: lease.fenceToken }
        const reset = yield* subscriptions.writeCheckpoint(
          projection.subscriptionId,
          Checkpoint.at(Cursor.start),
          Option.some(fence)
        )
        if (!reset) return yield* new Lease.LeaseLost({ subscriptionId: projection.subscriptionId, ...fence })
        const { events: total } = yield* subscriptions.lag({ categories: projection.categories }, Cursor.start)
        yield* onProgress({ done: 0, total })
        if (total === 0) return { done: 0, total }
        const done = yield* Effect.scoped(
          lead(projection, lease, config, slot, (done) => Effect.as(onProgress({ done: Math.min(done, total), total }), done < total))
        )
        return { done: Math.min(Option.getOrElse(done, () => 0), total), total }
      })
    )
    // Another worker holds the lease: try again after each recheck interval until this one leads.
    const led = yield* Effect.repeat(
      Effect.tap(attempt, (led) => (Option.isNone(led) ? Effect.sleep(config.recheck) : Effect.void)),
      { until: (led): led is Option.Some<Progress> => Option.isSome(led) }
    )
    return led.value
  })
