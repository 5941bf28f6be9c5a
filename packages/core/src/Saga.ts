/**
 * Sagas: durable process managers. A saga has a typed state, starts on an
 * aggregate's event (once per instance, however often the event is
 * delivered), and runs named steps in order. A step is an `Effect` from
 * (state, input) to what it emits: events appended to other streams, outbox
 * messages for the world outside, and optionally a wait for a response event
 * correlated to the instance through `correlationId` metadata. A failed step,
 * an error response or a timeout runs the compensations of the completed
 * steps in reverse order, then ends the instance as failed.
 *
 * Durability: a step runs with no transaction open (it may call slow
 * services without holding back any subscription); its outcome then commits
 * in one short transaction with the events it emits and the messages it
 * queues, only while the worker's claim on the instance holds, so a crash
 * never loses or duplicates an emit. A step's own effects outside the
 * database run at least once (again after a crash, or when it outlives its
 * claim); make them idempotent. A database error while writing an outcome
 * is retried, never compensated; deadlines are stored, so timeouts survive
 * restarts. A {@link SagaRunner} drives the instances.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Aggregate from "./Aggregate.js"
import type * as EventCodec from "./EventCodec.js"
import * as EventStore from "./EventStore.js"
import type { EventDecodeError, InvalidInput } from "./EventStoreError.js"
import * as ExpectedVersion from "./ExpectedVersion.js"
import type { CommittedEvents, JsonObject, NewEvent, RecordedEvent } from "./RecordedEvent.js"

/**
 * What a step receives: the start event, the response the previous step
 * awaited, or nothing.
 *
 * @since 0.1.0
 * @category models
 */
export type Input<Start> =
  | { readonly _tag: "Start"; readonly event: Start }
  | { readonly _tag: "Response"; readonly eventType: string; readonly data: JsonObject }
  | { readonly _tag: "None" }

/**
 * Events a step appends to one stream (encoded).
 *
 * @since 0.1.0
 * @category models
 */
export interface Emit {
  readonly streamId: string
  readonly category: string
  readonly events: ReadonlyArray<NewEvent>
}

/**
 * A message for the outbox. Its idempotency key defaults to
 * `<correlation id>:<step>:<index>`, stable across retries.
 *
 * @since 0.1.0
 * @category models
 */
export interface Message {
  readonly topic: string
  readonly payload: JsonObject
  readonly key?: string
}

/**
 * What a step (or a compensation) produces.
 *
 * @since 0.1.0
 * @category models
 */
export interface StepResult<S> {
  readonly state?: S
  readonly emit?: ReadonlyArray<Emit>
  readonly outbox?: ReadonlyArray<Message>
}

/**
 * A step's wait for a response.
 *
 * @since 0.1.0
 * @category models
 */
export interface Await {
  readonly category: string
  /** The stored types awaited, former names included. */
  readonly types: ReadonlyArray<string>
  readonly timeout: Duration.Duration
  /** Decodes (upcasting) a response and encodes it at its current version, for the next step. */
  readonly normalize: (recorded: RecordedEvent) => Effect.Effect<NewEvent, EventDecodeError | InvalidInput>
}

/**
 * A step failed: its error is kept as `cause`.
 *
 * @since 0.1.0
 * @category errors
 */
export class StepFailed extends Schema.TaggedError<StepFailed>()("StepFailed", {
  step: Schema.String,
  cause: Schema.Defect
}) {}

/**
 * A named step.
 *
 * @since 0.1.0
 * @category models
 */
export interface Step<S, Start, R> {
  readonly name: string
  readonly run: (state: S, input: Input<Start>) => Effect.Effect<StepResult<S>, StepFailed, R>
  readonly compensate: ((state: S) => Effect.Effect<StepResult<S>, StepFailed, R>) | undefined
  readonly awaits: Await | undefined
}

/**
 * Defines a step.
 *
 * @example
 * Saga.step("reserve-stock", {
 *   run: (state) => Effect.map(Saga.emit(Stock, state.sku, Reserved.make({ order: state.order })), (e) => ({ emit: [e] })),
 *   compensate: (state) => Effect.map(Saga.emit(Stock, state.sku, Released.make({ order: state.order })), (e) => ({ emit: [e] }))
 * })
 * @since 0.1.0
 * @category constructors
 */
export const step = <S, Start = never, R = never>(
  name: string,
  options: {
    readonly run: (state: S, input: Input<Start>) => Effect.Effect<StepResult<S>, unknown, R>
    readonly compensate?: (state: S) => Effect.Effect<StepResult<S>, unknown, R>
    readonly awaits?: Await
  }
): Step<S, Start, R> => {
  const compensate = options.compensate
  // A step that fails, throws or dies has failed: the saga compensates (it never kills its worker).
  const guard = <A, R2>(effect: () => Effect.Effect<A, unknown, R2>): Effect.Effect<A, StepFailed, R2> =>
    Effect.suspend(effect).pipe(
      Effect.mapError((cause) => new StepFailed({ step: name, cause })),
      Effect.catchAllDefect((cause) => Effect.fail(new StepFailed({ step: name, cause })))
    )
  return {
    name,
    run: (state, input) => guard(() => options.run(state, input)),
    compensate: compensate === undefined ? undefined : (state) => guard(() => compensate(state)),
    awaits: options.awaits
  }
}

/**
 * Declares that a step waits for a response of these events (stored types
 * known statically, without an instance) within `timeout`.
 *
 * @example
 * Saga.awaitEvent(Payment, { timeout: "30 seconds" })
 * @since 0.1.0
 * @category constructors
 */
export const awaitEvent = <S, E>(
  source: Aggregate.Aggregate<S, E> | EventCodec.EventCodec<E>,
  options: { readonly timeout: Duration.DurationInput; readonly only?: ReadonlyArray<string> }
): Await => {
  const codec = "codec" in source ? source.codec : source
  const tags = new Set(options.only ?? [...codec.types.keys()])
  return {
    category: codec.category,
    types: [...codec.tagOf].flatMap(([type, tag]) => (tags.has(tag) ? [type] : [])),
    timeout: Duration.decode(options.timeout),
    normalize: (recorded) => Effect.flatMap(codec.decode(recorded), codec.encode)
  }
}

/**
 * What starts an instance: an aggregate's events, and for each one the
 * instance id and initial state (`None`: this event starts nothing).
 *
 * @since 0.1.0
 * @category models
 */
export interface StartOn<S, Start> {
  readonly categories: ReadonlyArray<string>
  readonly decode: (recorded: RecordedEvent) => Effect.Effect<Start, EventDecodeError>
  readonly encode: (event: Start) => Effect.Effect<NewEvent, InvalidInput>
  readonly start: (event: Start, recorded: RecordedEvent) => Option.Option<{ readonly instanceId: string; readonly state: S }>
}

/**
 * A saga definition.
 *
 * @since 0.1.0
 * @category models
 */
export interface Saga<S, Start, R> {
  readonly name: string
  readonly state: Schema.Schema<S, JsonObject>
  readonly startOn: StartOn<S, Start>
  readonly steps: ReadonlyArray<Step<S, Start, R>>
}

/**
 * Defines a saga.
 *
 * @example
 * const Fulfilment = Saga.make({
 *   name: "fulfilment",
 *   state: FulfilmentState,
 *   startOn: { aggregate: Order, start: (event, recorded) => event._tag === "Placed" ? Option.some({ instanceId: recorded.streamId, state: { ... } }) : Option.none() },
 *   steps: [reserve, charge, ship]
 * })
 * @since 0.1.0
 * @category constructors
 */
export const make = <S, SI extends JsonObject, AS, Start, R>(options: {
  readonly name: string
  readonly state: Schema.Schema<S, SI>
  readonly startOn: {
    readonly aggregate: Aggregate.Aggregate<AS, Start>
    readonly start: (event: Start, recorded: RecordedEvent) => Option.Option<{ readonly instanceId: string; readonly state: S }>
  }
  readonly steps: ReadonlyArray<Step<S, Start, R>>
}): Saga<S, Start, R> => ({
  name: options.name,
  state: options.state as unknown as Schema.Schema<S, JsonObject>,
  startOn: {
    categories: [options.startOn.aggregate.category],
    decode: options.startOn.aggregate.codec.decode,
    encode: options.startOn.aggregate.codec.encode,
    start: options.startOn.start
  },
  steps: options.steps
})

/**
 * Encodes events for another aggregate's stream, to emit from a step.
 *
 * @example
 * Saga.emit(Stock, "sku-1", Reserved.make({ quantity: 2 }))
 * @since 0.1.0
 * @category constructors
 */
export const emit = <S, E>(
  aggregate: Aggregate.Aggregate<S, E>,
  id: string,
  ...events: ReadonlyArray<E>
): Effect.Effect<Emit, InvalidInput> =>
  Effect.map(aggregate.codec.encodeAll(events), (encoded) => ({
    streamId: `${aggregate.category}-${id}`,
    category: aggregate.category,
    events: encoded
  }))

/**
 * The correlation id of an instance: the `correlationId` metadata its emits
 * carry and its responses must carry back.
 *
 * @since 0.1.0
 */
export const correlationId = (sagaName: string, instanceId: string): string => `saga:${sagaName}:${instanceId}`

/**
 * The correlation id a step's emits carry: the instance's, plus `#<step index>`
 * (`#` never appears in ids), which replies echo back.
 *
 * @since 0.1.0
 */
export const stepCorrelationId = (instanceCorrelationId: string, stepIndex: number): string =>
  `${instanceCorrelationId}#${stepIndex}`

/**
 * Splits a reply's correlation id into the instance's and the step index (absent when the
 * reply names no step).
 *
 * @since 0.1.0
 */
export const parseCorrelationId = (correlation: string): { readonly instance: string; readonly step: number | undefined } => {
  const hash = correlation.lastIndexOf("#")
  const step = hash < 0 ? Number.NaN : Number(correlation.slice(hash + 1))
  return Number.isSafeInteger(step)
    ? { instance: correlation.slice(0, hash), step }
    : { instance: correlation, step: undefined }
}

/**
 * Answers a waiting step (the seeds' `IntoResponse`): turns a typed result
 * into the response event, appended to `id`'s stream with the request's
 * correlation id. A `Left` is an error response: the awaiting step fails and
 * the saga compensates.
 *
 * @example
 * Saga.reply(Payment, orderId, recorded.metadata.correlationId, charged ? Either.right(Charged.make({})) : Either.left(Declined.make({})))
 * @since 0.1.0
 */
export const reply = <S, E>(
  aggregate: Aggregate.Aggregate<S, E>,
  id: string,
  correlation: string | undefined,
  result: { readonly _tag: "Right"; readonly right: E } | { readonly _tag: "Left"; readonly left: E }
): Effect.Effect<CommittedEvents, EventStore.AppendError, EventStore.EventStore> =>
  Effect.gen(function* () {
    const event = result._tag === "Right" ? result.right : result.left
    const encoded = yield* aggregate.codec.encode(event)
    const metadata = {
      ...(correlation === undefined ? {} : { correlationId: correlation }),
      custom: { mireResponse: { isError: result._tag === "Left" } }
    }
    return yield* EventStore.append(`${aggregate.category}-${id}`, aggregate.category, ExpectedVersion.Any, [
      { ...encoded, metadata }
    ])
  })

/**
 * Is a recorded response an error response?
 *
 * @since 0.1.0
 */
export const isErrorResponse = (recorded: RecordedEvent): boolean => {
  const marker = recorded.metadata.custom?.mireResponse
  return typeof marker === "object" && marker !== null && (marker as { readonly isError?: unknown }).isError === true
}
