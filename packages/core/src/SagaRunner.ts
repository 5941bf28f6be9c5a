/**
 * The saga runner: drives saga instances durably.
 *
 * - **Starting**: a transactional projection per saga over its start
 *   category inserts an instance per start event; the instance id is the
 *   primary key, so a start event delivered twice yields one instance.
 * - **Responses**: a transactional projection over the awaited categories
 *   routes an event whose `correlationId` names a waiting instance and whose
 *   type it awaits back to that instance.
 * - **Driving**: a worker claims a due instance in one short statement (a
 *   claim token, hidden from other workers for `claimTimeout`), runs its
 *   step with no transaction open (a slow step never holds the xmin horizon,
 *   so it delays no subscription), then writes the outcome in one short
 *   transaction with the events it emits, its outbox messages and its
 *   history entry, only if its claim still holds. While the step runs and
 *   its outcome is written, the worker extends its claim every third of
 *   `claimTimeout`, so a step of any length runs once. Only a worker that
 *   cannot extend its claim (crashed, frozen, cut off from the database)
 *   loses it after `claimTimeout`: another worker then runs the step again
 *   and the first one's outcome and emits are not written. A step's side
 *   effects outside the database run at least once, its recorded outcome
 *   and emits exactly once. A worker that stops releases its claims.
 * - **Retries**: a `StoreError` while writing an outcome (a cancelled
 *   statement, a lost connection, a failed COMMIT) fails the write, not
 *   the saga: the same outcome is written again after a backoff
 *   (`transitionRetry`) while the claim holds; the step does not run
 *   again. Only the step's own failure, an error response or a timeout
 *   compensates. A failing compensation is released and retried with the
 *   same backoff until it succeeds. Both show as `attempts` and
 *   `lastError` in `status`, without a history entry per retry.
 * - **Refusals**: what a step (or compensation) produces must be storable:
 *   its emits valid events, its encoded state and outbox payloads JSON that
 *   PostgreSQL keeps unchanged (no bigint, NUL, `undefined`, `Date`...,
 *   checked before any I/O). Anything else is the step's own failure, not
 *   retried: a refused step compensates; a refused compensation is recorded
 *   in history (`compensation-refused: ...`) and the older steps are still
 *   compensated, the instance ending `failed`.
 * - Workers wake on notifications and poll as a fallback; deadlines are
 *   stored, so timeouts survive restarts.
 * - **Outbox**: messages are published at least once, with a stable
 *   idempotency key, retried with a `Schedule` on failure.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as EventStore from "./EventStore.js"
import type { EventDecodeError, InvalidInput, StoreError } from "./EventStoreError.js"
import * as ExpectedVersion from "./ExpectedVersion.js"
import * as Json from "./internal/json.js"
import * as Decision from "./internal/sagaDecision.js"
import * as Wakeup from "./internal/wakeup.js"
import * as Metrics from "./Metrics.js"
import * as Projection from "./Projection.js"
import * as ProjectionRunner from "./ProjectionRunner.js"
import * as Saga from "./Saga.js"
import * as SagaStore from "./SagaStore.js"
import type * as LeaseStore from "./LeaseStore.js"
import type * as SubscriptionStore from "./SubscriptionStore.js"

/**
 * Publishes one outbox message to the world outside; must tolerate seeing
 * the same idempotency key twice (delivery is at-least-once).
 *
 * @since 0.1.0
 * @category models
 */
export type Publisher<E = never, R = never> = (message: SagaStore.OutboxRow) => Effect.Effect<void, E, R>

/**
 * The runner's settings; each has a default in {@link defaults}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Settings {
  /** Longest wait between polls without a notification. */
  readonly pollInterval: Duration.DurationInput
  /** Instances driven concurrently by this worker, per saga. */
  readonly concurrency: number
  /** Options of the start and response projections (lease, batch size), over {@link defaults}' own. */
  readonly projections: Omit<ProjectionRunner.Options, "workerId">
  /** Delays between publish attempts of a message. */
  readonly publishRetry: Schedule.Schedule<unknown, unknown>
  /**
   * How long a claim lasts unless extended. A worker extends its claims
   * every third of it while their steps run; a worker that cannot (crashed,
   * frozen) loses them after this long, and another worker runs the step
   * again; only one outcome is ever written.
   */
  readonly claimTimeout: Duration.DurationInput
  /**
   * Delays before the next attempt of a transition whose outcome could not
   * be written, or whose compensation failed, by attempt.
   */
  readonly transitionRetry: Schedule.Schedule<unknown, unknown>
  /**
   * How long a claimed outbox message stays hidden from other publishers:
   * a publisher that crashed after claiming it leaves it to another after
   * this long (so it may be published twice, under the same key).
   */
  readonly outboxVisibility: Duration.DurationInput
  /** The longest pause of a publisher that found nothing to publish (never longer than `pollInterval`). */
  readonly publishIdle: Duration.DurationInput
  /** The pause before following the store's wake-ups again after their stream failed (a lost listener). */
  readonly wakeupRetry: Duration.DurationInput
  /** Wake-ups kept for idle workers; a burst beyond it coalesces (every worker also polls). */
  readonly wakeupCapacity: number
  /** How often the `mire_saga_instances` gauges are refreshed. */
  readonly gaugeInterval: Duration.DurationInput
}

/**
 * The default delays between attempts of a failed transition: exponential
 * from 200 ms, doubling, capped at 30 s.
 *
 * @since 0.1.0
 * @category models
 */
export const defaultTransitionRetry: Schedule.Schedule<unknown, unknown> = Schedule.exponential("200 millis").pipe(
  Schedule.union(Schedule.spaced("30 seconds"))
)

/**
 * The default settings: polls every second, 8 instances at a time per saga,
 * claims of 60 s, transitions retried per {@link defaultTransitionRetry},
 * publishes retried exponentially from 100 ms (capped at 30 s), outbox
 * messages hidden for 30 s while published, wake-ups followed again 1 s
 * after a failure, gauges refreshed every 5 s; the start and response
 * projections poll every 200 ms on leases of 10 s rechecked every second.
 *
 * @since 0.1.0
 * @category models
 */
export const defaults: Settings = {
  pollInterval: Duration.seconds(1),
  concurrency: 8,
  projections: { pollInterval: Duration.millis(200), leaseTtl: Duration.seconds(10), leaseRecheckInterval: Duration.seconds(1) },
  publishRetry: Schedule.exponential("100 millis").pipe(Schedule.union(Schedule.spaced("30 seconds"))),
  claimTimeout: Duration.seconds(60),
  transitionRetry: defaultTransitionRetry,
  outboxVisibility: Duration.seconds(30),
  publishIdle: Duration.millis(100),
  wakeupRetry: Duration.seconds(1),
  wakeupCapacity: 64,
  gaugeInterval: Duration.seconds(5)
}

/**
 * Runner options: the worker's id, an optional publisher, and any settings
 * that differ from {@link defaults}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<E = never, R = never> extends Partial<Settings> {
  readonly workerId: string
  /** Publishes outbox messages; without it, this worker publishes nothing. */
  readonly publisher?: Publisher<E, R>
}

/**
 * An instance's status, for operators.
 *
 * @since 0.1.0
 * @category models
 */
export interface InstanceStatus {
  readonly sagaName: string
  readonly instanceId: string
  readonly status: SagaStore.Status
  readonly currentStep: string | null
  readonly error: string | null
  /** Failed attempts of the current transition, retried with backoff (0 once one commits). */
  readonly attempts: number
  /** The last such failure. */
  readonly lastError: string | null
  readonly updatedAt: Date
}

/**
 * A running saga worker.
 *
 * @since 0.1.0
 * @category models
 */
export interface SagaRunner {
  readonly workerId: string
  /** Instances of a saga, optionally of one status, with their current step. */
  readonly status: (
    sagaName: string,
    status?: SagaStore.Status
  ) => Effect.Effect<ReadonlyArray<InstanceStatus>, StoreError>
}

/** A saga's instances (of one status, if given), with the names of their current steps. */
const listStatus = (
  store: SagaStore.SagaStore,
  sagaName: string,
  steps: ReadonlyArray<{ readonly name: string }>,
  only: SagaStore.Status | undefined
): Effect.Effect<ReadonlyArray<InstanceStatus>, StoreError> =>
  Effect.map(store.list(sagaName), (rows) =>
    rows
      .filter((row) => only === undefined || row.status === only)
      .map((row) => ({
        sagaName: row.sagaName,
        instanceId: row.instanceId,
        status: row.status,
        currentStep: row.status === "completed" || row.stepIndex < 0 ? null : (steps[row.stepIndex]?.name ?? null),
        error: row.error,
        attempts: row.attempts,
        lastError: row.lastError,
        updatedAt: row.updatedAt
      }))
  )

/**
 * Lists a saga's instances by status.
 *
 * @example
 * ```ts
 * import { type Saga, SagaRunner } from "@mire/core"
 * import { Effect } from "effect"
 *
 * declare const Fulfilment: Saga.Saga<{ readonly order: string }, never, never>
 *
 * const program = Effect.gen(function* () {
 *   const waiting = yield* SagaRunner.status(Fulfilment, "waiting")
 *   yield* Effect.log(`${waiting.length} instances wait for a reply`)
 * })
 * ```
 * @since 0.1.0
 */
export const status = <S, Start, R>(
  saga: Saga.Saga<S, Start, R>,
  only?: SagaStore.Status
): Effect.Effect<ReadonlyArray<InstanceStatus>, StoreError, SagaStore.SagaStore> =>
  Effect.flatMap(SagaStore.SagaStore, (store) => listStatus(store, saga.name, saga.steps, only))

const now: Effect.Effect<Date> = Effect.map(Clock.currentTimeMillis, (millis) => new Date(millis))

const plus = (at: Date, duration: Duration.DurationInput): Date => new Date(at.getTime() + Duration.toMillis(duration))

/**
 * The delay after the `attempt`-th failure, as `schedule` would wait
 * (its last delay once it ends: these retries never stop).
 */
const delayAfter = (schedule: Schedule.Schedule<unknown, unknown>, attempt: number): Effect.Effect<Duration.Duration> => {
  const n = Math.min(Math.max(1, attempt), 64)
  return Effect.map(Schedule.run(Schedule.delays(schedule), 0, Array.from({ length: n }, (_, i) => i)), (outs) => {
    const delays = [...outs]
    return delays[n - 1] ?? delays[delays.length - 1] ?? Duration.seconds(30)
  })
}

/**
 * Writes a transition of an instance: its history entries, the instance's
 * next row, and a wake-up sent at commit. The one place a decision is
 * persisted; runs inside the caller's transaction, which locked the row.
 */
const write = (
  store: SagaStore.SagaStore,
  sagaName: string,
  row: SagaStore.InstanceRow,
  transition: Decision.Transition,
  workerId: string,
  at: Date
): Effect.Effect<void, StoreError> =>
  Effect.gen(function* () {
    for (const entry of Decision.history(transition)) {
      yield* store.appendHistory({ sagaName, instanceId: row.instanceId, step: entry.step, outcome: entry.outcome, workerId })
    }
    yield* store.update(Decision.next(row, transition, at))
    yield* store.notify(sagaName)
  })

/**
 * What running a claimed instance's work produced, outside any transaction:
 * an event to decide on; what a step (or compensation) produced, to write
 * with the event it leads to (or, if refused, the refusal's); or a failed
 * attempt, retried.
 */
type Performed<S> =
  | { readonly _tag: "Decided"; readonly event: Decision.Event }
  | {
      readonly _tag: "Produced"
      readonly step: string
      readonly result: Saga.StepResult<S>
      readonly state: S
      readonly written: (state: unknown) => Decision.Event
      readonly refused: (reason: string) => Decision.Event
    }
  | { readonly _tag: "Failed"; readonly reason: string }

const decided = (event: Decision.Event): Performed<never> => ({ _tag: "Decided", event })

/** The stored input of a step, its start event decoded (and upcast). */
const toInput = <Start>(
  startOn: Saga.StartOn<unknown, Start>,
  stored: SagaStore.StoredInput | null
): Effect.Effect<Saga.Input<Start>, EventDecodeError> => {
  if (stored === null) return Effect.succeed({ _tag: "None" })
  switch (stored._tag) {
    case "None":
    case "Response":
      return Effect.succeed(stored)
    case "Start":
      return Effect.map(startOn.decode(stored.event), (event) => ({ _tag: "Start", event }))
  }
}

/** Runs a claimed instance's work (its step or compensation), with no transaction open. */
const perform = <S, Start, R>(saga: Saga.Saga<S, Start, R>, row: SagaStore.InstanceRow): Effect.Effect<Performed<S>, never, R> =>
  Effect.gen(function* () {
    const decoded = Schema.decodeUnknownEither(saga.state)(row.state)
    if (Either.isLeft(decoded)) {
      return decided(Decision.Event.StateUndecodable({ reason: ParseResult.TreeFormatter.formatErrorSync(decoded.left) }))
    }
    const state = decoded.right
    const work = Decision.work(row, saga.steps.length)
    switch (work._tag) {
      case "TimeOut":
        return decided(Decision.Event.DeadlinePassed())
      case "Finish":
        return decided(Decision.Event.NoStepLeft())
      case "Compensate": {
        const step = saga.steps[work.index]
        if (step?.compensate === undefined) return decided(Decision.Event.Compensated({ state: row.state, ran: false }))
        const result = yield* Effect.either(step.compensate(state))
        // A compensation that fails is retried with backoff: compensations must eventually succeed.
        if (Either.isLeft(result)) return { _tag: "Failed", reason: `compensation of ${step.name} failed: ${result.left.detail}` }
        return {
          _tag: "Produced",
          step: step.name,
          result: result.right,
          state,
          written: (next) => Decision.Event.Compensated({ state: next, ran: true }),
          refused: (reason) => Decision.Event.CompensationRefused({ reason })
        }
      }
      case "Run": {
        const step = saga.steps[work.index]
        if (step === undefined) return decided(Decision.Event.NoStepLeft())
        const input = yield* Effect.either(toInput(saga.startOn, row.input))
        if (Either.isLeft(input)) return decided(Decision.Event.InputUndecodable({ reason: input.left.message }))
        const result = yield* Effect.either(step.run(state, input.right))
        if (Either.isLeft(result)) return decided(Decision.Event.StepFailed({ reason: result.left.detail }))
        return {
          _tag: "Produced",
          step: step.name,
          result: result.right,
          state,
          written: (next) => Decision.Event.StepSucceeded({ state: next }),
          refused: (reason) => Decision.Event.StepFailed({ reason })
        }
      }
    }
  })

const refused = (step: string, reason: string) => new Saga.StepFailed<never>({ step, reason: { _tag: "Refused", reason } })

/**
 * Writes what a step produced (its emits, outbox messages and encoded
 * state) in a savepoint. Refused (an invalid emit, a state that fails its
 * Schema, a state or outbox payload that is not JSON, checked before any
 * I/O): `StepFailed`, nothing of it stays. A `StoreError` stays one: it
 * fails the whole transition, which is retried.
 */
const apply = <S, Start, R>(
  saga: Saga.Saga<S, Start, R>,
  row: SagaStore.InstanceRow,
  name: string,
  result: Saga.StepResult<S>,
  state: S
): Effect.Effect<unknown, Saga.StepFailed<never> | StoreError, EventStore.EventStore | SagaStore.SagaStore> =>
  Effect.gen(function* () {
    const store = yield* SagaStore.SagaStore
    // What the step produced must be JSON Postgres stores unchanged, checked before any I/O: anything
    // else is the step's own failure (never a retry, which would run it again to the same end).
    const encoded = yield* Effect.mapError(Schema.encode(saga.state)(result.state ?? state), (e) =>
      refused(name, ParseResult.TreeFormatter.formatErrorSync(e))
    )
    const stateFault = Json.encode(encoded, EventStore.defaults.maxDepth, EventStore.defaults.maxEventSize)
    if (stateFault instanceof Json.JsonFault) return yield* refused(name, `${stateFault.path("state")}: ${stateFault.reason}`)
    const outbox: Array<SagaStore.StorableMessage> = []
    for (const [i, message] of (result.outbox ?? []).entries()) {
      const text = Json.isPlainObject(message.payload)
        ? Json.encode(message.payload, EventStore.defaults.maxDepth, EventStore.defaults.maxEventSize)
        : new Json.JsonFault("is not a JSON object")
      if (text instanceof Json.JsonFault) return yield* refused(name, `${text.path(`outbox[${i}].payload`)}: ${text.reason}`)
      outbox.push({
        // A compensation's messages get keys of their own: with the step's keys, a refund would be
        // dropped as a duplicate of the charge the step sent at the same index.
        idempotencyKey: message.key ?? `${row.correlationId}:${name}${row.status === "compensating" ? ":compensate" : ""}:${i}`,
        topic: message.topic,
        payload: message.payload,
        payloadJson: text
      })
    }
    const emits = result.emit ?? []
    if (emits.length > 0) {
      yield* EventStore.appendMany(
        emits.map((e) => ({
          streamId: e.streamId,
          category: e.category,
          expected: ExpectedVersion.Any,
          events: e.events.map((event) => ({
            ...event,
            // The correlation names the step too, so a late or repeated reply to an earlier step
            // can never complete a later one.
            metadata: {
              ...event.metadata,
              correlationId: Saga.stepCorrelationId(row.correlationId, row.stepIndex),
              custom: { saga: saga.name, step: name }
            }
          }))
        }))
      )
    }
    if (outbox.length > 0) yield* store.enqueue(outbox)
    return encoded
  }).pipe(
    EventStore.transaction,
    Effect.catchIf(
      (e): e is Exclude<typeof e, StoreError | Saga.StepFailed<never>> => e._tag !== "StoreError" && e._tag !== "StepFailed",
      (e) => Effect.fail(refused(name, Decision.describe(e)))
    )
  )

/** How a worker drives instances: its store, its id and the settings it resolved. */
interface Driver {
  readonly store: SagaStore.SagaStore
  readonly workerId: string
  readonly claimTimeout: Duration.Duration
  readonly transitionRetry: Schedule.Schedule<unknown, unknown>
}

/** `claimTimeout` from now: the expiry of a claim taken or extended now. */
const claimUntil = (driver: Driver) => Effect.map(now, (at) => plus(at, driver.claimTimeout))

/**
 * Writes what was performed in one short transaction, only while the
 * claim `token` still holds the instance at the version it was claimed at;
 * `false` when it no longer does (the claim expired and was taken over):
 * then nothing is written, emits included.
 */
const commit = <S, Start, R>(
  driver: Driver,
  saga: Saga.Saga<S, Start, R>,
  row: SagaStore.InstanceRow,
  token: string,
  performed: Exclude<Performed<S>, { readonly _tag: "Failed" }>
): Effect.Effect<boolean, StoreError, EventStore.EventStore | SagaStore.SagaStore> =>
  EventStore.transaction(
    Effect.gen(function* () {
      if (!(yield* driver.store.holdsClaim(saga.name, row.instanceId, token, row.version))) return false
      const at = yield* now
      const event =
        performed._tag === "Decided"
          ? performed.event
          : yield* apply(saga, row, performed.step, performed.result, performed.state).pipe(
              Effect.map(performed.written),
              Effect.catchTag("StepFailed", (e) => Effect.succeed(performed.refused(e.detail)))
            )
      yield* write(driver.store, saga.name, row, Decision.decide(row, event, { steps: saga.steps, now: at }), driver.workerId, at)
      return true
    })
  )

/**
 * Records a failed attempt of the claimed instance's transition (counted,
 * due again after `transitionRetry`'s delay), if the claim holds.
 */
const retryLater = <S, Start, R>(
  driver: Driver,
  saga: Saga.Saga<S, Start, R>,
  row: SagaStore.InstanceRow,
  token: string,
  reason: string
): Effect.Effect<void, StoreError, EventStore.EventStore | SagaStore.SagaStore> =>
  Effect.gen(function* () {
    yield* Effect.logWarning(`saga ${saga.name}: instance ${row.instanceId}: ${reason}; will retry`)
    const delay = yield* delayAfter(driver.transitionRetry, row.attempts + 1)
    yield* EventStore.transaction(
      Effect.gen(function* () {
        if (!(yield* driver.store.holdsClaim(saga.name, row.instanceId, token, row.version))) return
        const at = yield* now
        const transition = Decision.decide(row, Decision.Event.AttemptFailed({ reason, delay }), { steps: saga.steps, now: at })
        yield* write(driver.store, saga.name, row, transition, driver.workerId, at)
      })
    )
  })

/** Releases the claim unchanged (the worker stops), so another worker takes the instance at once. */
const release = (
  driver: Driver,
  sagaName: string,
  row: SagaStore.InstanceRow,
  token: string
): Effect.Effect<void, StoreError, EventStore.EventStore> =>
  EventStore.transaction(
    Effect.gen(function* () {
      if (yield* driver.store.holdsClaim(sagaName, row.instanceId, token, row.version)) {
        yield* driver.store.update(row)
        yield* driver.store.notify(sagaName)
      }
    })
  )

/**
 * Keeps a claim alive while its step runs and its outcome is written: every
 * third of `claimTimeout`, the claim's expiry moves to `claimTimeout` from
 * now. Completes `lost` (and stops) once the claim is found taken over or
 * released; a `StoreError` is logged and the next extension tried on time.
 */
const keepClaim = (
  driver: Driver,
  sagaName: string,
  row: SagaStore.InstanceRow,
  token: string,
  lost: Deferred.Deferred<void>
): Effect.Effect<void> => {
  const every = Duration.millis(Math.max(1, Math.floor(Duration.toMillis(driver.claimTimeout) / 3)))
  const extend = Effect.flatMap(claimUntil(driver), (until) => driver.store.extendClaim(sagaName, row.instanceId, token, until)).pipe(
    Effect.catchAll((error) =>
      Effect.as(Effect.logWarning(`saga ${sagaName}: instance ${row.instanceId}: could not extend its claim`, error), true)
    )
  )
  return Effect.sleep(every).pipe(
    Effect.zipRight(Effect.repeat(extend, { schedule: Schedule.spaced(every), while: (held) => held })),
    Effect.zipRight(Deferred.succeed(lost, undefined))
  )
}

/**
 * Writes what was performed; a `StoreError` retries the write of the same
 * outcome (the step does not run again) with `transitionRetry`, each
 * failure counted in status, while the claim holds. `false` once it does not.
 */
const commitWhileHeld = <S, Start, R>(
  driver: Driver,
  saga: Saga.Saga<S, Start, R>,
  row: SagaStore.InstanceRow,
  token: string,
  performed: Exclude<Performed<S>, { readonly _tag: "Failed" }>,
  lost: Deferred.Deferred<void>
): Effect.Effect<boolean, never, EventStore.EventStore | SagaStore.SagaStore> =>
  Effect.gen(function* () {
    const attempts = yield* Ref.make(row.attempts)
    const counted = (error: StoreError) =>
      Effect.gen(function* () {
        const attempt = yield* Ref.updateAndGet(attempts, (n) => n + 1)
        const lastError = `transition failed: ${Decision.describe(error)}`
        yield* Effect.logWarning(`saga ${saga.name}: instance ${row.instanceId}: ${lastError}; will retry the write`)
        const held = yield* Effect.flatMap(claimUntil(driver), (until) =>
          driver.store.extendClaim(saga.name, row.instanceId, token, until, { attempts: attempt, lastError })
        ).pipe(Effect.orElseSucceed(() => true))
        if (!held) yield* Deferred.succeed(lost, undefined)
      })
    return yield* commit(driver, saga, row, token, performed).pipe(
      Effect.tapError(counted),
      Effect.retry({ schedule: driver.transitionRetry, while: () => Effect.map(Deferred.isDone(lost), (done) => !done) }),
      // The claim was lost while the write kept failing: another worker has the instance.
      Effect.catchTag("StoreError", () => Effect.succeed(false))
    )
  })

/**
 * One transition of one due instance: claimed, run with no transaction
 * open, written fenced by the claim; `false` when none was due. Never
 * fails: what goes wrong is retried with backoff, or left to the claim's
 * expiry when not even the failure can be recorded.
 */
const driveOne = <S, Start, R>(
  driver: Driver,
  saga: Saga.Saga<S, Start, R>
): Effect.Effect<boolean, never, R | EventStore.EventStore | SagaStore.SagaStore> =>
  // Uninterruptible but for the step and its write: a claim taken is always released when stopped.
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function* () {
      const at = yield* now
      const token = yield* Effect.sync(() => crypto.randomUUID())
      const claimed = yield* driver.store.claimDue(saga.name, at, token, plus(at, driver.claimTimeout))
      if (Option.isNone(claimed)) return false
      const row = claimed.value
      const attempt = Effect.gen(function* () {
        // While the step runs and its outcome is written, the claim is kept alive.
        const lost = yield* Deferred.make<void>()
        yield* Effect.forkScoped(keepClaim(driver, saga.name, row, token, lost))
        const performed = yield* perform(saga, row)
        if (performed._tag === "Failed") return yield* retryLater(driver, saga, row, token, performed.reason)
        const written = yield* commitWhileHeld(driver, saga, row, token, performed, lost)
        if (!written) {
          yield* Effect.logWarning(
            `saga ${saga.name}: instance ${row.instanceId}: its claim no longer holds; outcome not written by this worker`
          )
        }
      }).pipe(Effect.scoped)
      yield* restore(attempt).pipe(
        // Whatever went wrong rolled back (a StoreError, a defect): the transition is retried with backoff.
        Effect.catchAllCause((cause) =>
          Cause.isInterruptedOnly(cause)
            ? Effect.failCause(cause)
            : restore(retryLater(driver, saga, row, token, `transition failed: ${Decision.describe(Cause.squash(cause))}`))
        ),
        // Stopped mid-step: release the claim, so another worker takes the instance at once.
        Effect.onInterrupt(() => Effect.ignore(release(driver, saga.name, row, token)))
      )
      return true
    })
  ).pipe(
    Effect.withSpan("SagaRunner.transition", { attributes: { "mire.saga": saga.name } }),
    // Not even the failure could be recorded: the claim expires and the instance is retried then.
    // A defect must not stop this worker (nor every worker that claims it).
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.failCause(cause)
        : Effect.as(Effect.logWarning(`saga ${saga.name}: transition failed, will retry`, cause), false)
    ),
    Effect.orDie
  )

/**
 * The start projection of a saga: inserts an instance per start event; the
 * instance id is the primary key, so a start event delivered twice yields
 * one instance.
 */
const startProjection = <S, Start, R>(
  store: SagaStore.SagaStore,
  saga: Saga.Saga<S, Start, R>
): Projection.Projection<R | EventStore.EventStore | SagaStore.SagaStore> =>
  Projection.transactional({
    subscriptionId: `saga-start:${saga.name}`,
    categories: saga.startOn.categories,
    handle: ({ event: recorded }) =>
      Effect.gen(function* () {
        const event = yield* saga.startOn.decode(recorded)
        const start = saga.startOn.start(event, recorded)
        if (Option.isNone(start)) return
        const state = yield* Schema.encode(saga.state)(start.value.state)
        // Stored at its current version (upcast on the way in), so the first step decodes it as-is.
        const current = yield* saga.startOn.encode(event)
        const at = yield* now
        const inserted = yield* store.insert({
          sagaName: saga.name,
          instanceId: start.value.instanceId,
          correlationId: Saga.correlationId(saga.name, start.value.instanceId),
          status: "running",
          stepIndex: 0,
          state,
          input: {
            _tag: "Start",
            event: {
              streamId: recorded.streamId,
              streamVersion: recorded.streamVersion,
              globalPosition: recorded.globalPosition,
              eventType: current.eventType,
              schemaVersion: current.schemaVersion,
              data: current.data
            }
          },
          awaiting: null,
          deadline: null,
          dueAt: at,
          error: null,
          attempts: 0,
          lastError: null,
          version: 1,
          updatedAt: at
        })
        if (inserted) yield* store.notify(saga.name)
      })
  })

/**
 * The response projection of a saga, over the categories its steps await:
 * routes an event whose correlation names a waiting instance (and its
 * current step, when it names one) and whose type it awaits back to it.
 * `None` when no step awaits anything.
 */
const responseProjection = <S, Start, R>(
  store: SagaStore.SagaStore,
  saga: Saga.Saga<S, Start, R>,
  workerId: string
): Option.Option<Projection.Projection<R | EventStore.EventStore | SagaStore.SagaStore>> => {
  const categories = [...new Set(saga.steps.flatMap((s) => (s.awaits === undefined ? [] : [s.awaits.category])))]
  if (categories.length === 0) return Option.none()
  return Option.some(
    Projection.transactional({
      subscriptionId: `saga-responses:${saga.name}`,
      categories,
      handle: ({ event: recorded }) =>
        Effect.gen(function* () {
          const correlation = recorded.metadata.correlationId
          if (correlation === undefined || !correlation.startsWith(`saga:${saga.name}:`)) return
          // The saga's own requests carry its correlation too: they are not replies.
          if (recorded.metadata.custom?.saga === saga.name) return
          const { instance, step } = Saga.parseCorrelationId(correlation)
          const claimed = yield* store.claimWaiting(instance)
          if (Option.isNone(claimed)) return
          const row = claimed.value
          if (step !== undefined && step !== row.stepIndex) return
          const awaits = saga.steps[row.stepIndex]?.awaits
          if (awaits === undefined || !(row.awaiting ?? []).includes(recorded.eventType)) return
          // Upcast the response to its current version; one that no longer decodes stops this
          // projection with an error naming it, rather than being skipped.
          const response = yield* awaits.normalize(recorded)
          const event = Saga.isErrorResponse(recorded)
            ? Decision.Event.ErrorResponse({ eventType: recorded.eventType })
            : Decision.Event.Responded({ eventType: response.eventType, data: response.data })
          const at = yield* now
          yield* write(store, saga.name, row, Decision.decide(row, event, { steps: saga.steps, now: at }), workerId, at)
        })
    })
  )
}

/** Refreshes the `mire_saga_instances` gauges of a saga on `interval`, in the current scope. */
const startGauges = (
  store: SagaStore.SagaStore,
  sagaName: string,
  interval: Duration.DurationInput
): Effect.Effect<void, never, Scope.Scope> => {
  const gauge = (state: SagaStore.Status) => Metric.tagged(Metric.tagged(Metrics.sagaInstances, "saga", sagaName), "state", state)
  return Effect.flatMap(store.counts(sagaName), (counts) =>
    Effect.forEach(SagaStore.Status.literals, (state) => Metric.set(gauge(state), counts.get(state) ?? 0), { discard: true })
  ).pipe(Effect.ignore, Effect.repeat(Schedule.spaced(interval)), Effect.forkScoped, Effect.asVoid)
}

/**
 * Publishes the outbox in the current scope: one message at a time,
 * claimed in a short transaction and published outside any (a slow
 * publisher never holds a transaction open, nor the xmin horizon), then a
 * pause when there was none. A crash after publishing republishes the
 * message with the same key once its visibility timeout passes:
 * at-least-once.
 */
const startPublisher = <E, R>(
  store: SagaStore.SagaStore,
  publisher: Publisher<E, R>,
  settings: Settings
): Effect.Effect<void, never, R | Scope.Scope> => {
  const publishOne = Effect.gen(function* () {
    const at = yield* now
    const [row] = yield* store.claimOutbox(at, plus(at, settings.outboxVisibility), 1)
    if (row === undefined) return false
    const outcome = yield* Effect.either(publisher(row))
    if (Either.isRight(outcome)) yield* store.markPublished(row.id)
    else {
      const delay = yield* delayAfter(settings.publishRetry, row.attempts)
      yield* store.markFailed(row.id, plus(at, delay), Decision.describe(outcome.left))
    }
    return true
  }).pipe(Effect.catchAll((error) => Effect.as(Effect.logWarning("outbox publish failed", error), false)))
  const idle = Duration.min(Duration.decode(settings.pollInterval), Duration.decode(settings.publishIdle))
  // Drains without pausing while there is something to publish.
  const pace = Schedule.identity<boolean>().pipe(Schedule.addDelay((published) => (published ? Duration.zero : idle)))
  return publishOne.pipe(Effect.repeat(pace), Effect.forkScoped, Effect.asVoid)
}

/**
 * Starts the workers of some sagas in the current scope: their start and
 * response projections, the instance drivers and (with a publisher) the
 * outbox publisher. Closing the scope stops them; an interrupted transition
 * rolls back and is redone by the next worker. Projection options the
 * projection runner rejects (two sagas of one name, a batch size that is
 * not a positive integer) are `InvalidInput`, before anything starts.
 *
 * @example
 * ```ts
 * import { type Saga, SagaRunner } from "@mire/core"
 * import { Effect } from "effect"
 *
 * declare const Fulfilment: Saga.Saga<{ readonly order: string }, never, never>
 * declare const post: (topic: string, payload: unknown) => Effect.Effect<void, Error>
 *
 * // The sagas run until the scope closes; outbox messages go out through `publisher`.
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const runner = yield* SagaRunner.run([Fulfilment], {
 *       workerId: "worker-1",
 *       publisher: (message) => post(message.topic, message.payload)
 *     })
 *   })
 * )
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const run = <S, Start, R, PE = never, PR = never>(
  sagas: ReadonlyArray<Saga.Saga<S, Start, R>>,
  options: Options<PE, PR>
): Effect.Effect<
  SagaRunner,
  InvalidInput,
  | R
  | PR
  | Scope.Scope
  | EventStore.EventStore
  | SagaStore.SagaStore
  | SubscriptionStore.SubscriptionStore
  | LeaseStore.LeaseStore
> =>
  Effect.gen(function* () {
    const { publisher, workerId, ...given } = options
    const settings: Settings = { ...defaults, ...given, projections: { ...defaults.projections, ...given.projections } }
    const store = yield* SagaStore.SagaStore
    const wakeup = yield* Wakeup.make(store.wakeups, { capacity: settings.wakeupCapacity, retry: settings.wakeupRetry })

    yield* ProjectionRunner.run(
      sagas.flatMap((saga) => [startProjection(store, saga), ...Option.toArray(responseProjection(store, saga, workerId))]),
      { ...settings.projections, workerId }
    )

    const driver: Driver = {
      store,
      workerId,
      claimTimeout: Duration.decode(settings.claimTimeout),
      transitionRetry: settings.transitionRetry
    }
    for (const saga of sagas) {
      // Drives due instances one after the other; with none due, waits for a wake-up or the poll interval.
      const worker = driveOne(driver, saga).pipe(
        Effect.flatMap((progressed) => (progressed ? Effect.void : wakeup.wait(settings.pollInterval))),
        Effect.repeat(Schedule.forever)
      )
      yield* Effect.replicateEffect(Effect.forkScoped(worker), Math.max(1, settings.concurrency), { discard: true })
      yield* startGauges(store, saga.name, settings.gaugeInterval)
    }
    if (publisher !== undefined) yield* startPublisher(store, publisher, settings)

    return {
      workerId,
      status: (sagaName: string, only?: SagaStore.Status) =>
        listStatus(store, sagaName, sagas.find((s) => s.name === sagaName)?.steps ?? [], only)
    }
  })
