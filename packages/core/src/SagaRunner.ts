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
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as EventStore from "./EventStore.js"
import type { EventDecodeError, StoreError } from "./EventStoreError.js"
import * as ExpectedVersion from "./ExpectedVersion.js"
import * as Json from "./internal/json.js"
import type * as Lease from "./Lease.js"
import * as Metrics from "./Metrics.js"
import * as Projection from "./Projection.js"
import * as ProjectionRunner from "./ProjectionRunner.js"
import * as Saga from "./Saga.js"
import * as SagaStore from "./SagaStore.js"
import type * as Subscription from "./Subscription.js"

/**
 * Publishes one outbox message to the world outside; must tolerate seeing
 * the same idempotency key twice (delivery is at-least-once).
 *
 * @since 0.1.0
 * @category models
 */
export type Publisher<E = never, R = never> = (message: SagaStore.OutboxRow) => Effect.Effect<void, E, R>

/**
 * Runner options.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<E = never, R = never> {
  readonly workerId: string
  /** Longest wait between polls without a notification (default 1 s). */
  readonly pollInterval?: Duration.DurationInput
  /** Instances driven concurrently by this worker (default 8). */
  readonly concurrency?: number
  /** Options of the start and response projections (lease, batch size). */
  readonly projections?: Omit<ProjectionRunner.Options, "workerId">
  /** Publishes outbox messages; without it, this worker publishes nothing. */
  readonly publisher?: Publisher<E, R>
  /** Delays between publish attempts of a message (default exponential from 100 ms, capped at 30 s). */
  readonly publishRetry?: Schedule.Schedule<unknown, unknown>
  /**
   * How long a claim lasts unless extended (default 60 s). A worker extends
   * its claims every third of it while their steps run; a worker that
   * cannot (crashed, frozen) loses them after this long, and another worker
   * runs the step again; only one outcome is ever written.
   */
  readonly claimTimeout?: Duration.DurationInput
  /**
   * Delays before the next attempt of a transition whose outcome could not be
   * written, or whose compensation failed, by attempt (default
   * {@link defaultTransitionRetry}: exponential from 200 ms, capped at 30 s).
   */
  readonly transitionRetry?: Schedule.Schedule<unknown, unknown>
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
 * const waiting = yield* SagaRunner.status(Fulfilment, "waiting")
 * @since 0.1.0
 */
export const status = <S, Start, R>(
  saga: Saga.Saga<S, Start, R>,
  only?: SagaStore.Status
): Effect.Effect<ReadonlyArray<InstanceStatus>, StoreError, SagaStore.SagaStoreTag> =>
  Effect.flatMap(SagaStore.SagaStoreTag, (store) => listStatus(store, saga.name, saga.steps, only))

const stepName = <S, Start, R>(saga: Saga.Saga<S, Start, R>, index: number) => saga.steps[index]?.name ?? `#${index}`

/** A transition committed: the instance moves on and its retry bookkeeping resets. */
const advance = (row: SagaStore.InstanceRow, now: Date, next: Partial<SagaStore.InstanceRow>): SagaStore.InstanceRow => ({
  ...row,
  ...next,
  attempts: 0,
  lastError: null,
  version: row.version + 1,
  updatedAt: now
})

/** The instance after its step at `failedIndex` failed: compensate the completed steps, newest first. */
const compensateFrom = (
  row: SagaStore.InstanceRow,
  failedIndex: number,
  error: string,
  now: Date
): SagaStore.InstanceRow =>
  advance(row, now, {
    status: failedIndex - 1 >= 0 ? "compensating" : "failed",
    stepIndex: failedIndex - 1,
    input: null,
    awaiting: null,
    deadline: null,
    dueAt: now,
    error
  })

/** The instance after the compensation of step `index` ran (or had none): the next one down, or failed. */
const compensated = (row: SagaStore.InstanceRow, index: number, state: unknown, now: Date): SagaStore.InstanceRow =>
  advance(row, now, { state, status: index - 1 >= 0 ? "compensating" : "failed", stepIndex: index - 1, dueAt: now })

/** The instance after its step at `index` completed with `input` for the next. */
const completeStep = (
  row: SagaStore.InstanceRow,
  index: number,
  steps: number,
  state: unknown,
  input: SagaStore.StoredInput,
  now: Date
): SagaStore.InstanceRow =>
  advance(row, now, {
    status: index + 1 >= steps ? "completed" : "running",
    stepIndex: index + 1 >= steps ? steps : index + 1,
    state,
    input,
    awaiting: null,
    deadline: null,
    dueAt: now
  })

/** The instance after its step at `index` ran and now awaits a response until `timeout` from now. */
const awaitResponse = (
  row: SagaStore.InstanceRow,
  state: unknown,
  awaits: Saga.Await,
  now: Date
): SagaStore.InstanceRow =>
  advance(row, now, {
    status: "waiting",
    state,
    input: null,
    awaiting: awaits.types,
    deadline: new Date(now.getTime() + Duration.toMillis(awaits.timeout)),
    dueAt: now
  })

/** The instance ended failed for good (its state or input no longer decodes). */
const fail = (row: SagaStore.InstanceRow, error: string, now: Date): SagaStore.InstanceRow =>
  advance(row, now, { status: "failed", error })

/**
 * The instance after an attempt of its transition failed (an outcome that
 * could not be written, a failing compensation): unchanged but for the
 * failure counted, due again after `delay`. No history entry: retries show
 * in `attempts` and `lastError`.
 */
const retryLater = (
  row: SagaStore.InstanceRow,
  error: string,
  delay: Duration.Duration,
  now: Date
): SagaStore.InstanceRow => {
  const due = new Date(now.getTime() + Duration.toMillis(delay))
  return {
    ...row,
    attempts: row.attempts + 1,
    lastError: error,
    dueAt: due,
    // A waiting instance is due by its deadline: its timeout is retried after the delay too.
    deadline: row.status === "waiting" ? due : row.deadline,
    version: row.version + 1,
    updatedAt: now
  }
}

/**
 * The delay after the `attempt`-th failure, as `schedule` would wait
 * (its last delay once it ends: these retries never stop).
 */
const delayAfter = (schedule: Schedule.Schedule<unknown, unknown>, attempt: number): Effect.Effect<Duration.Duration> =>
  Effect.map(
    Schedule.run(Schedule.delays(schedule), 0, Array.from({ length: Math.min(Math.max(1, attempt), 64) }, (_, i) => i)),
    (outs) => {
      const delays = [...outs]
      return delays[Math.min(Math.max(1, attempt), 64) - 1] ?? delays[delays.length - 1] ?? Duration.seconds(30)
    }
  )

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

const describe = (cause: unknown): string => {
  if (cause instanceof Error) return cause.message
  if (typeof cause === "string") return cause
  try {
    return JSON.stringify(cause, (_, v) => (typeof v === "bigint" ? v.toString() : v)) ?? String(cause)
  } catch {
    return String(cause)
  }
}

/** What a transition writes: its history entries and the instance's next row. */
interface Outcome {
  readonly history: ReadonlyArray<readonly [step: string, outcome: string]>
  readonly row: SagaStore.InstanceRow
}

/**
 * What a transition decided once its step (or compensation) ran, outside
 * any transaction: an outcome to write; what the step produced, to write
 * with the outcome it leads to (or, if refused, the refusal's); or a retry.
 */
type Plan<S> =
  | { readonly _tag: "Write"; readonly outcome: (now: Date) => Outcome }
  | {
      readonly _tag: "Apply"
      readonly step: string
      readonly result: Saga.StepResult<S>
      readonly state: S
      readonly applied: (state: unknown, now: Date) => Outcome
      readonly refused: (cause: string, now: Date) => Outcome
    }
  | { readonly _tag: "Retry"; readonly error: string }

/**
 * Decides one transition of a claimed instance, running its step or
 * compensation with no transaction open.
 */
const plan = <S, Start, R>(saga: Saga.Saga<S, Start, R>, row: SagaStore.InstanceRow): Effect.Effect<Plan<S>, never, R> =>
  Effect.gen(function* () {
    const write = (outcome: (now: Date) => Outcome): Plan<S> => ({ _tag: "Write", outcome })
    const decoded = yield* Effect.either(Schema.decodeUnknown(saga.state)(row.state))
    if (decoded._tag === "Left") {
      const error = `state does not decode: ${ParseResult.TreeFormatter.formatErrorSync(decoded.left)}`
      return write((now) => ({ history: [["state", "undecodable"]], row: fail(row, error, now) }))
    }
    const state = decoded.right

    if (row.status === "waiting") {
      // Claimed because its deadline passed: the awaited response never came.
      const name = stepName(saga, row.stepIndex)
      return write((now) => ({
        history: [[name, "timed-out"]],
        row: compensateFrom(row, row.stepIndex, `step ${name} timed out`, now)
      }))
    }

    if (row.status === "compensating") {
      const index = row.stepIndex
      const step = saga.steps[index]
      if (step?.compensate === undefined) return write((now) => ({ history: [], row: compensated(row, index, row.state, now) }))
      const result = yield* Effect.either(step.compensate(state))
      // A compensation that fails is retried with backoff: compensations must eventually succeed.
      if (result._tag === "Left") return { _tag: "Retry", error: `compensation of ${step.name} failed: ${describe(result.left.cause)}` }
      return {
        _tag: "Apply",
        step: step.name,
        result: result.right,
        state,
        applied: (next, now) => ({ history: [[step.name, "compensated"]], row: compensated(row, index, next, now) }),
        // Refused (an invalid emit, a payload that is not JSON): retrying cannot help. The refusal is
        // recorded and the older steps are still compensated; the instance ends `failed` as usual.
        refused: (cause, now) => ({
          history: [[step.name, `compensation-refused: ${cause}`]],
          row: compensated(row, index, row.state, now)
        })
      }
    }

    // Running: run the step.
    const index = row.stepIndex
    const step = saga.steps[index]
    if (step === undefined) return write((now) => ({ history: [], row: advance(row, now, { status: "completed" }) }))
    const input = yield* Effect.either(toInput(saga, row))
    if (input._tag === "Left") {
      const error = `the input of step ${step.name} does not decode: ${input.left.message}`
      return write((now) => ({ history: [[step.name, "input-undecodable"]], row: fail(row, error, now) }))
    }
    const result = yield* Effect.either(step.run(state, input.right))
    if (result._tag === "Left") {
      const cause = describe(result.left.cause)
      return write((now) => ({
        history: [[step.name, `failed: ${cause}`]],
        row: compensateFrom(row, index, `step ${step.name} failed: ${cause}`, now)
      }))
    }
    const awaits = step.awaits
    return {
      _tag: "Apply",
      step: step.name,
      result: result.right,
      state,
      applied: (next, now) =>
        awaits === undefined
          ? { history: [[step.name, "completed"]], row: completeStep(row, index, saga.steps.length, next, { kind: "none" }, now) }
          : { history: [[step.name, "awaiting"]], row: awaitResponse(row, next, awaits, now) },
      refused: (cause, now) => ({
        history: [[step.name, `failed: ${cause}`]],
        row: compensateFrom(row, index, `step ${step.name} failed: ${cause}`, now)
      })
    }
  })

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
): Effect.Effect<unknown, Saga.StepFailed | StoreError, EventStore.EventStore | SagaStore.SagaStoreTag> =>
  Effect.gen(function* () {
    const store = yield* SagaStore.SagaStoreTag
    // What the step produced must be JSON Postgres stores unchanged, checked before any I/O: anything
    // else is the step's own failure (never a retry, which would run it again to the same end).
    const encoded = yield* Effect.mapError(
      Schema.encode(saga.state)(result.state ?? state),
      (e) => new Saga.StepFailed({ step: name, cause: ParseResult.TreeFormatter.formatErrorSync(e) })
    )
    const stateFault = Json.encode(encoded, EventStore.defaults.maxDepth, EventStore.defaults.maxEventSize)
    if (stateFault instanceof Json.JsonFault) {
      return yield* new Saga.StepFailed({ step: name, cause: `${stateFault.path("state")}: ${stateFault.reason}` })
    }
    const outbox: Array<SagaStore.StorableMessage> = []
    for (const [i, message] of (result.outbox ?? []).entries()) {
      const text = Json.isPlainObject(message.payload)
        ? Json.encode(message.payload, EventStore.defaults.maxDepth, EventStore.defaults.maxEventSize)
        : new Json.JsonFault("is not a JSON object")
      if (text instanceof Json.JsonFault) {
        return yield* new Saga.StepFailed({ step: name, cause: `${text.path(`outbox[${i}].payload`)}: ${text.reason}` })
      }
      outbox.push({
        idempotencyKey: message.key ?? `${row.correlationId}:${name}:${i}`,
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
      (e): e is Exclude<typeof e, StoreError | Saga.StepFailed> => e._tag !== "StoreError" && e._tag !== "StepFailed",
      (e) => Effect.fail(new Saga.StepFailed({ step: name, cause: e }))
    )
  )

/**
 * Writes a planned transition in one short transaction, only while the
 * claim `token` still holds the instance at the version it was claimed at;
 * `false` when it no longer does (the claim expired and was taken over):
 * then nothing is written, emits included.
 */
const persist = <S, Start, R>(
  saga: Saga.Saga<S, Start, R>,
  row: SagaStore.InstanceRow,
  token: string,
  planned: Exclude<Plan<S>, { readonly _tag: "Retry" }>,
  workerId: string
): Effect.Effect<boolean, StoreError, EventStore.EventStore | SagaStore.SagaStoreTag> =>
  EventStore.transaction(
    Effect.gen(function* () {
      const store = yield* SagaStore.SagaStoreTag
      if (!(yield* store.holdsClaim(saga.name, row.instanceId, token, row.version))) return false
      const now = yield* Clock.currentTimeMillis.pipe(Effect.map((millis) => new Date(millis)))
      const outcome =
        planned._tag === "Write"
          ? planned.outcome(now)
          : yield* apply(saga, row, planned.step, planned.result, planned.state).pipe(
              Effect.map((next) => planned.applied(next, now)),
              Effect.catchTag("StepFailed", (e) => Effect.succeed(planned.refused(describe(e.cause), now)))
            )
      for (const [step, entry] of outcome.history) {
        yield* store.appendHistory({ sagaName: saga.name, instanceId: row.instanceId, step, outcome: entry, workerId })
      }
      yield* store.update(outcome.row)
      yield* store.notify(saga.name)
      return true
    })
  )

/** Rewrites the claimed instance as `next` (a counted failure, or unchanged to release it), if the claim holds. */
const rewriteClaimed = <S, Start, R>(
  saga: Saga.Saga<S, Start, R>,
  row: SagaStore.InstanceRow,
  token: string,
  next: SagaStore.InstanceRow
): Effect.Effect<void, StoreError, EventStore.EventStore | SagaStore.SagaStoreTag> =>
  EventStore.transaction(
    Effect.gen(function* () {
      const store = yield* SagaStore.SagaStoreTag
      if (yield* store.holdsClaim(saga.name, row.instanceId, token, row.version)) {
        yield* store.update(next)
        yield* store.notify(saga.name)
      }
    })
  )

const toInput = <S, Start, R>(
  saga: Saga.Saga<S, Start, R>,
  row: SagaStore.InstanceRow
): Effect.Effect<Saga.Input<Start>, EventDecodeError> => {
  const stored = row.input
  if (stored === null || stored.kind === "none") return Effect.succeed({ _tag: "None" })
  if (stored.kind === "response") {
    return Effect.succeed({ _tag: "Response", eventType: stored.eventType ?? "", data: stored.data ?? {} })
  }
  return saga.startOn
    .decode({
      eventId: "00000000-0000-0000-0000-000000000000",
      streamId: row.instanceId,
      category: saga.startOn.categories[0] ?? "",
      streamVersion: 0,
      globalPosition: 0n,
      transactionId: 0n,
      eventType: stored.eventType ?? "",
      schemaVersion: stored.schemaVersion ?? 1,
      data: stored.data ?? {},
      metadata: {},
      recordedAt: new Date(0)
    })
    .pipe(Effect.map((event): Saga.Input<Start> => ({ _tag: "Start", event })))
}

/**
 * Starts the workers of some sagas in the current scope: their start and
 * response projections, the instance drivers and (with a publisher) the
 * outbox publisher. Closing the scope stops them; an interrupted transition
 * rolls back and is redone by the next worker.
 *
 * @example
 * const runner = yield* SagaRunner.run([Fulfilment], { workerId: "worker-1", publisher: (m) => http.post(m.topic, m.payload) })
 * @since 0.1.0
 * @category constructors
 */
export const run = <S, Start, R, PE = never, PR = never>(
  sagas: ReadonlyArray<Saga.Saga<S, Start, R>>,
  options: Options<PE, PR>
): Effect.Effect<
  SagaRunner,
  never,
  | R
  | PR
  | Scope.Scope
  | EventStore.EventStore
  | SagaStore.SagaStoreTag
  | Subscription.SubscriptionStoreTag
  | Lease.LeaseStoreTag
> =>
  Effect.gen(function* () {
    const store = yield* SagaStore.SagaStoreTag
    const pollInterval = Duration.decode(options.pollInterval ?? "1 second")
    const concurrency = Math.max(1, options.concurrency ?? 8)
    const now = Effect.map(Clock.currentTimeMillis, (millis) => new Date(millis))

    const wake = yield* Queue.sliding<string>(64)
    yield* store.wakeups.pipe(
      Stream.runForEach((name) => Queue.offer(wake, name)),
      Effect.retry(Schedule.spaced("1 second")),
      Effect.forkScoped
    )

    const projections: Array<Projection.Projection<R | EventStore.EventStore | SagaStore.SagaStoreTag>> = []
    for (const saga of sagas) {
      projections.push(
        Projection.transactional({
          subscriptionId: `saga-start:${saga.name}`,
          categories: saga.startOn.categories,
          handle: ({ event: recorded }) =>
            Effect.gen(function* () {
              const event = yield* saga.startOn.decode(recorded)
              const start = saga.startOn.start(event, recorded)
              if (Option.isNone(start)) return
              const state = yield* Effect.orDie(Schema.encode(saga.state)(start.value.state))
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
                  kind: "start",
                  eventType: current.eventType,
                  schemaVersion: current.schemaVersion,
                  data: current.data
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
      )
      const responseCategories = [
        ...new Set(saga.steps.flatMap((s) => (s.awaits === undefined ? [] : [s.awaits.category])))
      ]
      if (responseCategories.length > 0) {
        projections.push(
          Projection.transactional({
            subscriptionId: `saga-responses:${saga.name}`,
            categories: responseCategories,
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
                const at = yield* now
                const name = stepName(saga, row.stepIndex)
                if (Saga.isErrorResponse(recorded)) {
                  yield* store.appendHistory({
                    sagaName: saga.name,
                    instanceId: row.instanceId,
                    step: name,
                    outcome: `error-response: ${recorded.eventType}`,
                    workerId: options.workerId
                  })
                  yield* store.update(compensateFrom(row, row.stepIndex, `step ${name} got an error response ${recorded.eventType}`, at))
                } else {
                  yield* store.appendHistory({
                    sagaName: saga.name,
                    instanceId: row.instanceId,
                    step: name,
                    outcome: "completed",
                    workerId: options.workerId
                  })
                  const input: SagaStore.StoredInput = {
                    kind: "response",
                    eventType: response.eventType,
                    schemaVersion: response.schemaVersion,
                    data: response.data
                  }
                  yield* store.update(completeStep(row, row.stepIndex, saga.steps.length, row.state, input, at))
                }
                yield* store.notify(saga.name)
              })
          })
        )
      }
    }
    yield* ProjectionRunner.run(projections, {
      pollInterval: "200 millis",
      leaseTtl: "10 seconds",
      leaseRecheckInterval: "1 second",
      ...options.projections,
      workerId: options.workerId
    })

    const gauge = (saga: string, state: SagaStore.Status) =>
      Metric.tagged(Metric.tagged(Metrics.sagaInstances, "saga", saga), "state", state)

    const claimMillis = Duration.toMillis(Duration.decode(options.claimTimeout ?? "60 seconds"))
    const retrySchedule = options.transitionRetry ?? defaultTransitionRetry

    const extendEvery = Duration.millis(Math.max(1, Math.floor(claimMillis / 3)))
    const claimUntil = Effect.map(now, (at) => new Date(at.getTime() + claimMillis))

    // Keeps a claim alive while its step runs and its outcome is written: every third of
    // `claimTimeout`, the claim's expiry moves to `claimTimeout` from now. Completes `lost` (and
    // stops) once the claim is found taken over or released; a StoreError is retried on schedule.
    const keepClaim = <S2, Start2, R2>(
      saga: Saga.Saga<S2, Start2, R2>,
      row: SagaStore.InstanceRow,
      token: string,
      lost: Deferred.Deferred<void>
    ) => {
      const extend = Effect.flatMap(claimUntil, (until) => store.extendClaim(saga.name, row.instanceId, token, until)).pipe(
        Effect.catchAll((error) =>
          Effect.as(Effect.logWarning(`saga ${saga.name}: instance ${row.instanceId}: could not extend its claim`, error), true)
        )
      )
      return Effect.sleep(extendEvery).pipe(
        Effect.zipRight(Effect.repeat(extend, { schedule: Schedule.spaced(extendEvery), while: (held) => held })),
        Effect.zipRight(Deferred.succeed(lost, undefined))
      )
    }

    // Writes a planned outcome; a StoreError retries the write of the same plan (the step does not run
    // again) with `transitionRetry`, counted in status, while the claim holds. `false` once it does not.
    const persistHeld = <S2, Start2, R2>(
      saga: Saga.Saga<S2, Start2, R2>,
      row: SagaStore.InstanceRow,
      token: string,
      planned: Exclude<Plan<S2>, { readonly _tag: "Retry" }>,
      lost: Deferred.Deferred<void>
    ) =>
      Effect.suspend(() => {
        let attempts = row.attempts
        return persist(saga, row, token, planned, options.workerId).pipe(
          Effect.tapError((error) =>
            Effect.gen(function* () {
              attempts++
              const lastError = `transition failed: ${describe(error)}`
              yield* Effect.logWarning(`saga ${saga.name}: instance ${row.instanceId}: ${lastError}; will retry the write`)
              const held = yield* Effect.flatMap(claimUntil, (until) =>
                store.extendClaim(saga.name, row.instanceId, token, until, { attempts, lastError })
              ).pipe(Effect.orElseSucceed(() => true))
              if (!held) yield* Deferred.succeed(lost, undefined)
            })
          ),
          Effect.retry({ schedule: retrySchedule, while: () => Effect.map(Deferred.isDone(lost), (done) => !done) }),
          // The claim was lost while the write kept failing: another worker has the instance.
          Effect.catchTag("StoreError", () => Effect.succeed(false))
        )
      })

    // One transition of one due instance: claimed, run with no transaction open, written fenced by
    // the claim; false when none was due.
    const driveOne = <S2, Start2, R2>(saga: Saga.Saga<S2, Start2, R2>) =>
      // Uninterruptible but for the step and its write: a claim taken is always released when stopped.
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function* () {
          const at = yield* now
          const token = yield* Effect.sync(() => crypto.randomUUID())
          const claimed = yield* store.claimDue(saga.name, at, token, new Date(at.getTime() + claimMillis))
          if (Option.isNone(claimed)) return false
          const row = claimed.value
          // A failed attempt: counted on the instance, which is due again after the schedule's delay.
          const retry = (error: string) =>
            Effect.gen(function* () {
              yield* Effect.logWarning(`saga ${saga.name}: instance ${row.instanceId}: ${error}; will retry`)
              const delay = yield* delayAfter(retrySchedule, row.attempts + 1)
              yield* rewriteClaimed(saga, row, token, retryLater(row, error, delay, yield* now))
            })
          const attempt = Effect.gen(function* () {
            // While the step runs and its outcome is written, the claim is kept alive.
            const lost = yield* Deferred.make<void>()
            yield* Effect.forkScoped(keepClaim(saga, row, token, lost))
            const planned = yield* plan(saga, row)
            if (planned._tag === "Retry") return yield* retry(planned.error)
            const written = yield* persistHeld(saga, row, token, planned, lost)
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
                : restore(retry(`transition failed: ${describe(Cause.squash(cause))}`))
            ),
            // Stopped mid-step: release the claim, so another worker takes the instance at once.
            Effect.onInterrupt(() => Effect.ignore(rewriteClaimed(saga, row, token, row)))
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

    for (const saga of sagas) {
      const worker = Effect.gen(function* () {
        for (;;) {
          const progressed = yield* driveOne(saga)
          if (!progressed) {
            yield* Queue.take(wake).pipe(Effect.timeout(pollInterval), Effect.ignore)
            yield* Queue.takeAll(wake)
          }
        }
      })
      yield* Effect.forkScoped(Effect.all(Array.from({ length: concurrency }, () => worker), { concurrency: "unbounded" }))
      yield* Effect.forkScoped(
        Effect.gen(function* () {
          const counts = yield* store.counts(saga.name)
          for (const state of ["running", "waiting", "compensating", "completed", "failed"] as const) {
            yield* Metric.set(gauge(saga.name, state), counts.get(state) ?? 0)
          }
        }).pipe(Effect.ignore, Effect.repeat(Schedule.spaced("5 seconds")))
      )
    }

    const publisher = options.publisher
    if (publisher !== undefined) {
      const publishRetry =
        options.publishRetry ?? Schedule.exponential("100 millis").pipe(Schedule.union(Schedule.spaced("30 seconds")))
      // Claimed in a short transaction, published outside any: a slow publisher never holds a
      // transaction open (nor the xmin horizon). A crash after publishing republishes the message
      // with the same key once its visibility timeout passes: at-least-once.
      const publishOne = Effect.gen(function* () {
        const at = yield* now
        const rows = yield* store.claimOutbox(at, new Date(at.getTime() + 30_000), 1)
        const row = rows[0]
        if (row === undefined) return false
        const outcome = yield* Effect.either(publisher(row))
        if (outcome._tag === "Right") yield* store.markPublished(row.id)
        else {
          const delay = yield* delayAfter(publishRetry, row.attempts)
          yield* store.markFailed(row.id, new Date(at.getTime() + Duration.toMillis(delay)), describe(outcome.left))
        }
        return true
      }).pipe(Effect.catchAll((error) => Effect.as(Effect.logWarning("outbox publish failed", error), false)))
      yield* Effect.forkScoped(
        Effect.gen(function* () {
          for (;;) {
            if (!(yield* publishOne)) yield* Effect.sleep(Duration.min(pollInterval, Duration.millis(100)))
          }
        })
      )
    }

    return {
      workerId: options.workerId,
      status: (sagaName: string, only?: SagaStore.Status) =>
        listStatus(store, sagaName, sagas.find((s) => s.name === sagaName)?.steps ?? [], only)
    }
  })
