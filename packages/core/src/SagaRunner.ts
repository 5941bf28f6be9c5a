/**
 * The saga runner: drives saga instances durably.
 *
 * - **Starting**: a transactional projection per saga over its start
 *   category inserts an instance per start event; the instance id is the
 *   primary key, so a start event delivered twice yields one instance.
 * - **Responses**: a transactional projection over the awaited categories
 *   routes an event whose `correlationId` names a waiting instance and whose
 *   type it awaits back to that instance.
 * - **Driving**: workers claim due instances with `FOR UPDATE SKIP LOCKED`
 *   (several workers share the work; a crashed worker's claims vanish with
 *   its connection) and run one transition per transaction, committed with
 *   the events it emits, its outbox messages and its history entry. Workers
 *   wake on notifications and poll as a fallback; deadlines are stored, so
 *   timeouts survive restarts.
 * - **Outbox**: messages are published at least once, with a stable
 *   idempotency key, retried with a `Schedule` on failure.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
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

/** The instance after its step at `failedIndex` failed: compensate the completed steps, newest first. */
const compensateFrom = (
  row: SagaStore.InstanceRow,
  failedIndex: number,
  error: string,
  now: Date
): SagaStore.InstanceRow => ({
  ...row,
  status: failedIndex - 1 >= 0 ? "compensating" : "failed",
  stepIndex: failedIndex - 1,
  input: null,
  awaiting: null,
  deadline: null,
  dueAt: now,
  error,
  version: row.version + 1,
  updatedAt: now
})

/** The instance after the compensation of step `index` ran (or had none): the next one down, or failed. */
const compensated = (row: SagaStore.InstanceRow, index: number, state: unknown, now: Date): SagaStore.InstanceRow => ({
  ...row,
  state,
  status: index - 1 >= 0 ? "compensating" : "failed",
  stepIndex: index - 1,
  dueAt: now,
  version: row.version + 1,
  updatedAt: now
})

/** The instance after its step at `index` completed with `input` for the next. */
const completeStep = (
  row: SagaStore.InstanceRow,
  index: number,
  steps: number,
  state: unknown,
  input: SagaStore.StoredInput,
  now: Date
): SagaStore.InstanceRow => ({
  ...row,
  status: index + 1 >= steps ? "completed" : "running",
  stepIndex: index + 1 >= steps ? steps : index + 1,
  state,
  input,
  awaiting: null,
  deadline: null,
  dueAt: now,
  version: row.version + 1,
  updatedAt: now
})

const describe = (cause: unknown): string => {
  if (cause instanceof Error) return cause.message
  if (typeof cause === "string") return cause
  try {
    return JSON.stringify(cause, (_, v) => (typeof v === "bigint" ? v.toString() : v)) ?? String(cause)
  } catch {
    return String(cause)
  }
}

/**
 * Runs one transition of a claimed instance: the caller's transaction
 * commits it with everything it emits.
 */
const transition = <S, Start, R>(
  saga: Saga.Saga<S, Start, R>,
  row: SagaStore.InstanceRow,
  workerId: string,
  now: Date
): Effect.Effect<void, StoreError | EventStore.AppendError, R | EventStore.EventStore | SagaStore.SagaStoreTag> =>
  Effect.gen(function* () {
    const store = yield* SagaStore.SagaStoreTag
    const decodeState = Schema.decodeUnknown(saga.state)
    const encodeState = Schema.encode(saga.state)
    const history = (step: string, outcome: string) =>
      store.appendHistory({ sagaName: saga.name, instanceId: row.instanceId, step, outcome, workerId })

    const decoded = yield* Effect.either(decodeState(row.state))
    if (decoded._tag === "Left") {
      yield* history("state", "undecodable")
      return yield* store.update({
        ...row,
        status: "failed",
        error: `state does not decode: ${ParseResult.TreeFormatter.formatErrorSync(decoded.left)}`,
        version: row.version + 1,
        updatedAt: now
      })
    }
    const state = decoded.right

    // Writes what a step produced, in a savepoint: if any of it is refused (an invalid emit, a state
    // that fails its Schema) nothing of it stays, and the step counts as failed. A StoreError is
    // left to fail the whole transition, which is then retried.
    const apply = (name: string, result: Saga.StepResult<S>) =>
      Effect.gen(function* () {
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
        const outbox = result.outbox ?? []
        if (outbox.length > 0) {
          yield* store.enqueue(
            outbox.map((m, i) => ({
              idempotencyKey: m.key ?? `${row.correlationId}:${name}:${i}`,
              topic: m.topic,
              payload: m.payload
            }))
          )
        }
        return yield* Effect.mapError(
          encodeState(result.state ?? state),
          (e) => new Saga.StepFailed({ step: name, cause: ParseResult.TreeFormatter.formatErrorSync(e) })
        )
      }).pipe(
        EventStore.transaction,
        Effect.catchIf(
          (e): e is Exclude<typeof e, StoreError> => e._tag !== "StoreError",
          (e) => Effect.fail(new Saga.StepFailed({ step: name, cause: e }))
        )
      )

    if (row.status === "waiting") {
      // Claimed because its deadline passed: the awaited response never came.
      const name = stepName(saga, row.stepIndex)
      yield* history(name, "timed-out")
      return yield* store.update(compensateFrom(row, row.stepIndex, `step ${name} timed out`, now))
    }

    if (row.status === "compensating") {
      const index = row.stepIndex
      const step = saga.steps[index]
      if (step?.compensate !== undefined) {
        const result = yield* Effect.either(step.compensate(state))
        if (result._tag === "Left") {
          // A compensation that fails is retried later: compensations must eventually succeed.
          yield* history(step.name, `compensation-failed: ${describe(result.left.cause)}`)
          return yield* store.update({ ...row, dueAt: new Date(now.getTime() + 1000), version: row.version + 1, updatedAt: now })
        }
        const applied = yield* Effect.either(apply(step.name, result.right))
        if (applied._tag === "Left") {
          yield* history(step.name, `compensation-refused: ${describe(applied.left.cause)}`)
          return yield* store.update({
            ...row,
            status: "failed",
            error: `compensation of ${step.name} was refused: ${describe(applied.left.cause)}`,
            version: row.version + 1,
            updatedAt: now
          })
        }
        yield* history(step.name, "compensated")
        return yield* store.update(compensated(row, index, applied.right, now))
      }
      return yield* store.update(compensated(row, index, row.state, now))
    }

    // Running: run the step.
    const index = row.stepIndex
    const step = saga.steps[index]
    if (step === undefined) {
      return yield* store.update({ ...row, status: "completed", version: row.version + 1, updatedAt: now })
    }
    const input = yield* Effect.either(toInput(saga, row))
    if (input._tag === "Left") {
      yield* history(step.name, "input-undecodable")
      return yield* store.update({
        ...row,
        status: "failed",
        error: `the input of step ${step.name} does not decode: ${input.left.message}`,
        version: row.version + 1,
        updatedAt: now
      })
    }
    const result = yield* Effect.either(step.run(state, input.right))
    if (result._tag === "Left") {
      yield* history(step.name, `failed: ${describe(result.left.cause)}`)
      return yield* store.update(compensateFrom(row, index, `step ${step.name} failed: ${describe(result.left.cause)}`, now))
    }
    const applied = yield* Effect.either(apply(step.name, result.right))
    if (applied._tag === "Left") {
      yield* history(step.name, `failed: ${describe(applied.left.cause)}`)
      return yield* store.update(compensateFrom(row, index, `step ${step.name} failed: ${describe(applied.left.cause)}`, now))
    }
    const nextState = applied.right
    if (step.awaits !== undefined) {
      yield* history(step.name, "awaiting")
      return yield* store.update({
        ...row,
        status: "waiting",
        state: nextState,
        input: null,
        awaiting: step.awaits.types,
        deadline: new Date(now.getTime() + Duration.toMillis(step.awaits.timeout)),
        dueAt: now,
        version: row.version + 1,
        updatedAt: now
      })
    }
    yield* history(step.name, "completed")
    return yield* store.update(completeStep(row, index, saga.steps.length, nextState, { kind: "none" }, now))
  })

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
    const events = yield* EventStore.EventStore
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

    // One transition of one due instance, in its own transaction; false when none was due.
    const driveOne = <S2, Start2, R2>(saga: Saga.Saga<S2, Start2, R2>) =>
      events.transaction(
        Effect.gen(function* () {
          const at = yield* now
          const claimed = yield* store.claimDue(saga.name, at)
          if (Option.isNone(claimed)) return false
          yield* transition(saga, claimed.value, options.workerId, at)
          yield* store.notify(saga.name)
          return true
        })
      ).pipe(
        Effect.withSpan("SagaRunner.transition", { attributes: { "mire.saga": saga.name } }),
        // Whatever went wrong rolled back; the instance stays due and is retried. A defect is
        // logged like a failure: it must not stop this worker (nor every worker that claims it).
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
      const delays = Schedule.delays(options.publishRetry ?? Schedule.exponential("100 millis").pipe(Schedule.upTo("30 seconds")))
      // The delay after the n-th failed attempt, as the schedule would have waited.
      const delayAfter = (failures: number) =>
        Effect.map(
          Schedule.run(delays, Date.now(), Array.from({ length: failures }, (_, i) => i)),
          (outs) => [...outs][failures - 1] ?? Duration.seconds(30)
        )
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
          const delay = yield* delayAfter(row.attempts)
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
