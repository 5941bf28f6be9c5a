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
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
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

/**
 * A projection stopped: an event kept failing (or could not be decoded), or
 * the ordering backstop tripped. It names the event; the checkpoint stays
 * before it.
 *
 * @since 0.1.0
 * @category errors
 */
export class ProjectionFailed extends Schema.TaggedError<ProjectionFailed>()("ProjectionFailed", {
  subscriptionId: Schema.String,
  streamId: Schema.String,
  streamVersion: Schema.Number,
  globalPosition: Schema.BigIntFromSelf,
  eventType: Schema.String,
  attempts: Schema.Number,
  cause: Schema.Defect
}) {
  override get message(): string {
    return `projection ${this.subscriptionId} stopped at ${this.streamId} v${this.streamVersion} (${this.eventType}, position ${this.globalPosition}) after ${this.attempts} attempt(s)`
  }
}

/**
 * Runner options.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly workerId: string
  /** Longest wait between polls without a notification (default 1 s). */
  readonly pollInterval?: Duration.DurationInput
  /** Events per batch (default {@link Subscription.defaultBatchSize}, 1000). */
  readonly batchSize?: number
  /** Lease lifetime without renewal (default 30 s). */
  readonly leaseTtl?: Duration.DurationInput
  /** How often a follower tries to acquire (default 5 s). */
  readonly leaseRecheckInterval?: Duration.DurationInput
  /** Delays between handler attempts (default {@link defaultRetry}: exponential from 100 ms, jittered). */
  readonly retry?: Schedule.Schedule<unknown, unknown>
  /** Attempts per event before the projection stops (default 5). */
  readonly maxAttempts?: number
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
 * The schedule a runner retries a failing handler with (for a transactional
 * projection, the whole batch): the delays of `retry` (default
 * {@link defaultRetry}), at most `maxAttempts - 1` times (default 5 attempts
 * in all), after which the projection stops with `ProjectionFailed`.
 *
 * @example
 * // The delays a runner waits after each of the first 3 failures (of 4 attempts), computed without waiting:
 * const delays = Schedule.run(Schedule.delays(ProjectionRunner.retrySchedule({ maxAttempts: 4 })), 0, [1, 2, 3])
 * @since 0.1.0
 * @category schedules
 */
export const retrySchedule = (options: {
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
  readonly maxAttempts?: number | undefined
}): Schedule.Schedule<unknown, unknown> =>
  (options.retry ?? defaultRetry).pipe(Schedule.intersect(Schedule.recurs(Math.max(1, options.maxAttempts ?? 5) - 1)))

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
export interface ProjectionStatus {
  readonly subscriptionId: string
  readonly workerId: string
  readonly state: State
  /** The fence token this runner holds, when leader. */
  readonly fenceToken: Option.Option<bigint>
  /** The lease as stored (possibly another worker's). */
  readonly lease: Option.Option<Lease.LeaseStatus>
  readonly lag: Subscription.Lag
  /** Events this runner handled (attempts that succeeded). */
  readonly handled: number
  readonly failure: Option.Option<ProjectionFailed>
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
export interface ProjectionRunner {
  readonly workerId: string
  /** Each projection's status; a log or checkpoint ahead of the server's xids shows as that projection `failed`. */
  readonly status: Effect.Effect<ReadonlyArray<ProjectionStatus>, StoreError>
  /** Waits until the projection has handled everything appended so far (lag 0). */
  readonly whenCaughtUp: (subscriptionId: string, timeout?: Duration.DurationInput) => Effect.Effect<void, StoreError | InvalidInput | XidAhead>
}

/**
 * The `ProjectionRunner` tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class ProjectionRunnerTag extends Context.Tag("@mire/core/ProjectionRunner")<ProjectionRunnerTag, ProjectionRunner>() {}

interface Slot {
  state: State
  fenceToken: Option.Option<bigint>
  handled: number
  failure: Option.Option<ProjectionFailed>
}

type LeaderExit = ProjectionFailed | OrderingViolation | MissingVersion | XidAhead | Lease.LeaseLost | StoreError | InvalidInput

const failed = (
  subscriptionId: string,
  event: RecordedEvent,
  attempts: number,
  cause: unknown
): ProjectionFailed =>
  new ProjectionFailed({
    subscriptionId,
    streamId: event.streamId,
    streamVersion: event.streamVersion,
    globalPosition: event.globalPosition,
    eventType: event.eventType,
    attempts,
    cause
  })

const resolve = (options: Options) => {
  const leaseTtl = Duration.decode(options.leaseTtl ?? "30 seconds")
  const recheck = Duration.decode(options.leaseRecheckInterval ?? "5 seconds")
  return {
    workerId: options.workerId,
    pollInterval: options.pollInterval ?? "1 second",
    batchSize: options.batchSize ?? Subscription.defaultBatchSize,
    leaseTtl,
    recheck,
    heartbeat: Duration.min(recheck, Duration.divide(leaseTtl, 3).pipe(Option.getOrElse(() => leaseTtl))),
    retry: retrySchedule(options).pipe(Schedule.tapOutput(() => Metric.increment(Metrics.handlerRetries)))
  }
}

type Resolved = ReturnType<typeof resolve>

/**
 * Leads one projection with a held lease until the lease is lost or the
 * projection fails.
 */
const lead = <R>(
  projection: Projection.Projection<R>,
  lease: Lease.LeaseStatus,
  config: Resolved,
  slot: Ref.Ref<Slot>,
  onBatch?: (done: number) => Effect.Effect<boolean>
): Effect.Effect<void, LeaderExit, R | Lease.LeaseStoreTag | Subscription.SubscriptionStoreTag | Scope.Scope> =>
  Effect.gen(function* () {
    const leases = yield* Lease.LeaseStoreTag
    const subscriptions = yield* Subscription.SubscriptionStoreTag
    const subscriptionId = projection.subscriptionId
    const fence: Lease.Fence = { workerId: config.workerId, fenceToken: lease.fenceToken }
    const sub = yield* Subscription.make({
      subscriptionId,
      categories: projection.categories,
      batchSize: config.batchSize,
      pollInterval: config.pollInterval
    })
    const handled = (n: number) => Ref.update(slot, (s) => ({ ...s, handled: s.handled + n }))
    /**
     * The retries of an event whose first attempt failed with `first`: the
     * schedule sees that failure first, so the delays and the attempt count
     * are those of `Effect.retry(process, config.retry)`; built only when a
     * handler fails, never per event.
     */
    const retryAfter = (event: RecordedEvent, first: EventDecodeError | Projection.HandlerFailure) => {
      let attempts = 0
      return Effect.suspend(() => (++attempts === 1 ? Effect.fail(first) : projection.process(event))).pipe(
        Effect.tapError(() => Metric.increment(Metrics.handlerFailures)),
        Effect.retry(config.retry),
        Effect.mapError((cause) => failed(subscriptionId, event, attempts, cause))
      )
    }
    /** At-least-once: the handler on every event in order, in one loop; a failure retries that event, then goes on. */
    const handleAll = (batch: ReadonlyArray<RecordedEvent>) => {
      let index = 0
      const from: Effect.Effect<void, ProjectionFailed, R> = Effect.whileLoop({
        while: () => index < batch.length,
        body: () => projection.process(batch[index]!),
        step: () => {
          index++
        }
      }).pipe(
        Effect.catchAll((first) =>
          Effect.zipRight(
            retryAfter(batch[index]!, first),
            Effect.suspend(() => {
              index++
              return from
            })
          )
        )
      )
      return Effect.ensuring(from, Effect.suspend(() => handled(index)))
    }
    const refused = (e: Lease.LeaseLost) => Effect.zipRight(Metric.increment(Metrics.fenceRefusals), Effect.fail(e))

    const processBatch = (batch: ReadonlyArray<RecordedEvent>) =>
      Effect.gen(function* () {
        const { checkpoint } = yield* sub.position
        if (projection.delivery === "at-least-once") {
          yield* handleAll(batch)
          // One fenced write, atomic on its own: no transaction around it (a single statement on Postgres).
          const written = yield* subscriptions.writeCheckpoint(subscriptionId, checkpoint, Option.some(fence))
          if (!written) return yield* refused(new Lease.LeaseLost({ subscriptionId, ...fence }))
          return
        }
        // Transactional: the whole batch and its checkpoint commit together, or not at all.
        // `index` is the event being handled, for the failure's report.
        let index = 0
        let attempts = 0
        const handleBatch = Effect.whileLoop({
          while: () => index < batch.length,
          body: () => projection.process(batch[index]!),
          step: () => {
            index++
          }
        })
        yield* Effect.suspend(() => {
          attempts++
          index = 0
          return leases.commitFenced(subscriptionId, fence, checkpoint, handleBatch)
        }).pipe(
          Effect.tapError((e) =>
            e._tag === "HandlerFailure" || e._tag === "EventDecodeError" ? Metric.increment(Metrics.handlerFailures) : Effect.void
          ),
          Effect.retry({
            schedule: config.retry,
            // Only the handler is retried here. A StoreError (a COMMIT whose outcome is unknown, a lost
            // connection) ends the leadership instead, and the next one resumes from the persisted
            // checkpoint, so a batch that did commit is never applied twice.
            while: (e) => e._tag === "EventDecodeError" || e._tag === "HandlerFailure"
          }),
          Effect.catchTags({
            LeaseLost: refused,
            EventDecodeError: (e: EventDecodeError) => Effect.fail(failed(subscriptionId, batch[index]!, attempts, e)),
            HandlerFailure: (e) => Effect.fail(failed(subscriptionId, batch[index]!, attempts, e.cause))
          })
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

    let done = 0
    const work = sub.batches.pipe(
      Stream.mapEffect((batch) =>
        Effect.zipRight(
          processBatch(batch),
          Effect.suspend(() => {
            done += batch.length
            return onBatch === undefined ? Effect.succeed(true) : onBatch(done)
          })
        )
      ),
      Stream.takeWhile((more) => more),
      Stream.runDrain
    )
    const heartbeat = leases.renew(subscriptionId, fence, config.leaseTtl).pipe(
      Effect.withSpan("Lease.renew", {
        attributes: { "mire.subscription_id": subscriptionId, "mire.fence_token": lease.fenceToken.toString() }
      }),
      Effect.flatMap((held) => (held ? Effect.void : Effect.fail(new Lease.LeaseLost({ subscriptionId, ...fence })))),
      Effect.repeat(Schedule.spaced(config.heartbeat)),
      Effect.zipRight(Effect.never)
    )
    yield* Effect.raceFirst(work, heartbeat)
  })

/** Runs `use` while holding the projection's lease (acquired and released as a scoped resource). */
const withLease = <A, E, R>(
  subscriptionId: string,
  config: Resolved,
  use: (lease: Lease.LeaseStatus) => Effect.Effect<A, E, R>
): Effect.Effect<Option.Option<A>, E | StoreError, R | Lease.LeaseStoreTag> =>
  Effect.scoped(
    Effect.gen(function* () {
      const leases = yield* Lease.LeaseStoreTag
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

const supervise = <R>(
  projection: Projection.Projection<R>,
  config: Resolved,
  slot: Ref.Ref<Slot>
): Effect.Effect<void, never, R | Lease.LeaseStoreTag | Subscription.SubscriptionStoreTag> =>
  Effect.gen(function* () {
    for (;;) {
      yield* Ref.update(slot, (s) => ({ ...s, state: "standby" as const, fenceToken: Option.none() }))
      const outcome = yield* withLease(projection.subscriptionId, config, (lease) =>
        Ref.update(slot, (s) => ({ ...s, state: "leader" as const, fenceToken: Option.some(lease.fenceToken) })).pipe(
          Effect.zipRight(Effect.scoped(lead(projection, lease, config, slot)))
        )
      ).pipe(
        // A defect in the runner or a store must not kill this supervisor silently: the projection stops, visibly.
        Effect.catchAllDefect((defect) =>
          Effect.fail(
            new ProjectionFailed({
              subscriptionId: projection.subscriptionId,
              streamId: "",
              streamVersion: 0,
              globalPosition: 0n,
              eventType: "",
              attempts: 0,
              cause: defect
            })
          )
        ),
        Effect.either
      )
      if (outcome._tag === "Right") {
        if (Option.isNone(outcome.right)) yield* Effect.sleep(config.recheck)
        continue
      }
      const error = outcome.left
      switch (error._tag) {
        case "LeaseLost":
          yield* Metric.increment(Metrics.leaseLost)
          yield* Effect.logWarning(`lost the lease on ${projection.subscriptionId}; standing by`)
          // Another worker holds it now; look again after the recheck interval, not in a spin.
          yield* Effect.sleep(config.recheck)
          continue
        case "StoreError":
          yield* Effect.logWarning(`projection ${projection.subscriptionId}: ${error.message}; retrying`)
          yield* Effect.sleep(config.recheck)
          continue
        default: {
          const failure =
            error._tag === "ProjectionFailed"
              ? error
              : new ProjectionFailed({
                  subscriptionId: projection.subscriptionId,
                  streamId: error._tag === "OrderingViolation" || error._tag === "MissingVersion" ? error.streamId : "",
                  streamVersion:
                    error._tag === "OrderingViolation" ? error.version : error._tag === "MissingVersion" ? error.missing : 0,
                  globalPosition: 0n,
                  eventType: "",
                  attempts: 0,
                  cause: error
                })
          yield* Effect.logError(failure.message, failure.cause)
          // For status, in every process: the store keeps it until the next checkpoint or reset.
          yield* Subscription.SubscriptionStoreTag.pipe(
            Effect.flatMap((store) => store.recordFailure(projection.subscriptionId, `${error._tag}: ${error.message}`)),
            Effect.ignore
          )
          yield* Ref.update(slot, (s) => ({ ...s, state: "failed" as const, fenceToken: Option.none(), failure: Option.some(failure) }))
          return
        }
      }
    }
  }).pipe(Effect.annotateLogs({ subscription: projection.subscriptionId, worker: config.workerId }))

/**
 * Starts the projections, each in its own fiber in the current scope;
 * closing the scope stops them and releases their leases.
 *
 * @example
 * const runner = yield* ProjectionRunner.run([balances], { workerId: "replica-a" })
 * @since 0.1.0
 * @category constructors
 */
export const run = <R>(
  projections: ReadonlyArray<Projection.Projection<R>>,
  options: Options
): Effect.Effect<
  ProjectionRunner,
  never,
  R | Scope.Scope | Lease.LeaseStoreTag | Subscription.SubscriptionStoreTag
> =>
  Effect.gen(function* () {
    const config = resolve(options)
    const subscriptions = yield* Subscription.SubscriptionStoreTag
    const leases = yield* Lease.LeaseStoreTag
    const slots = new Map<string, { readonly projection: Projection.Projection<R>; readonly slot: Ref.Ref<Slot> }>()
    for (const projection of projections) {
      const slot = yield* Ref.make<Slot>({ state: "standby", fenceToken: Option.none(), handled: 0, failure: Option.none() })
      slots.set(projection.subscriptionId, { projection, slot })
      yield* Effect.forkScoped(supervise(projection, config, slot))
    }
    const lagOf = (projection: Projection.Projection<R>) =>
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
    const noLag: Subscription.Lag = { events: 0, ageMillis: 0, oldestTransactionMillis: 0 }
    const status = Effect.forEach([...slots.values()], ({ projection, slot }) =>
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
        Effect.map(({ s, lease, lag, report }): ProjectionStatus => {
          const recordedFailure = Option.flatMap(report, (r) => r.failure)
          if (lag._tag === "Left") {
            const ahead = lag.left
            return {
              subscriptionId: projection.subscriptionId,
              workerId: config.workerId,
              state: "failed",
              fenceToken: s.fenceToken,
              lease,
              lag: noLag,
              handled: s.handled,
              failure: Option.orElse(s.failure, () =>
                Option.some(
                  new ProjectionFailed({
                    subscriptionId: projection.subscriptionId,
                    streamId: "",
                    streamVersion: 0,
                    globalPosition: 0n,
                    eventType: "",
                    attempts: 0,
                    cause: ahead
                  })
                )
              ),
              recordedFailure
            }
          }
          return {
            subscriptionId: projection.subscriptionId,
            workerId: config.workerId,
            state: s.state,
            fenceToken: s.fenceToken,
            lease,
            lag: lag.right,
            handled: s.handled,
            failure: s.failure,
            recordedFailure
          }
        })
      )
    )
    const whenCaughtUp = (subscriptionId: string, timeout: Duration.DurationInput = "30 seconds") => {
      const entry = slots.get(subscriptionId)
      if (entry === undefined) {
        return Effect.fail(new InvalidInput({ field: "subscriptionId", reason: `${subscriptionId} is not run here` }))
      }
      return lagOf(entry.projection).pipe(
        Effect.repeat({ until: (lag) => lag.events === 0, schedule: Schedule.spaced("20 millis") }),
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () => new InvalidInput({ field: "whenCaughtUp", reason: `${subscriptionId} not caught up in time` })
        }),
        Effect.asVoid
      )
    }
    return { workerId: config.workerId, status, whenCaughtUp }
  })

/**
 * The runner as a layer: its scope owns every projection's fiber.
 *
 * @example
 * const Live = ProjectionRunner.layer([balances, totals], { workerId: hostname() })
 * @since 0.1.0
 * @category layers
 */
export const layer = <R>(
  projections: ReadonlyArray<Projection.Projection<R>>,
  options: Options
): Layer.Layer<ProjectionRunnerTag, never, R | Lease.LeaseStoreTag | Subscription.SubscriptionStoreTag> =>
  Layer.scoped(ProjectionRunnerTag, run(projections, options))

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
 * yield* ProjectionRunner.rebuild(balancesV2, { workerId: "rebuilder" }, (p) => Console.log(`${p.done}/${p.total}`))
 * @since 0.1.0
 */
export const rebuild = <R>(
  projection: Projection.Projection<R>,
  options: Options,
  onProgress: (progress: Progress) => Effect.Effect<void> = () => Effect.void
): Effect.Effect<Progress, LeaderExit, R | Lease.LeaseStoreTag | Subscription.SubscriptionStoreTag> =>
  Effect.gen(function* () {
    const config = resolve(options)
    const subscriptions = yield* Subscription.SubscriptionStoreTag
    const slot = yield* Ref.make<Slot>({ state: "standby", fenceToken: Option.none(), handled: 0, failure: Option.none() })
    for (;;) {
      const result = yield* withLease(projection.subscriptionId, config, (lease) =>
        Effect.gen(function* () {
          const fence = { workerId: config.workerId, fenceToken: lease.fenceToken }
          const reset = yield* subscriptions.writeCheckpoint(
            projection.subscriptionId,
            Subscription.checkpointAt(Cursor.start),
            Option.some(fence)
          )
          if (!reset) return yield* new Lease.LeaseLost({ subscriptionId: projection.subscriptionId, ...fence })
          const { events: total } = yield* subscriptions.lag({ categories: projection.categories }, Cursor.start)
          yield* onProgress({ done: 0, total })
          if (total === 0) return { done: 0, total }
          let last = 0
          yield* Effect.scoped(
            lead(projection, lease, config, slot, (done) => {
              last = done
              return Effect.as(onProgress({ done: Math.min(done, total), total }), done < total)
            })
          )
          return { done: Math.min(last, total), total }
        })
      )
      if (Option.isSome(result)) return result.value
      yield* Effect.sleep(config.recheck)
    }
  })
