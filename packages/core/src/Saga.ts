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
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import type * as Aggregate from "./Aggregate.js"
import type * as EventCodec from "./EventCodec.js"
import * as EventStore from "./EventStore.js"
import type { EventDecodeError, InvalidInput } from "./EventStoreError.js"
import * as ExpectedVersion from "./ExpectedVersion.js"
import { describe } from "./internal/sagaDecision.js"
import { JsonObject } from "./RecordedEvent.js"
import type { CommittedEvents, NewEvent, RecordedEvent } from "./RecordedEvent.js"

/**
 * What a step receives: the start event, the response the previous step
 * awaited, or nothing. `Start` is the start event as the step sees it
 * (decoded); stored, it is a {@link StartEvent}, decoded when the step runs.
 *
 * @since 0.1.0
 * @category models
 */
export type Input<Start> =
  | { readonly _tag: "Start"; readonly event: Start }
  | { readonly _tag: "Response"; readonly eventType: string; readonly data: JsonObject }
  | { readonly _tag: "None" }

/**
 * A start event as an instance keeps it for its first step: encoded at its
 * current version, with where it was recorded (named if it no longer
 * decodes).
 *
 * @since 0.1.0
 * @category models
 */
export type StartEvent = EventCodec.Decodable

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
 * Why a step (or a compensation) failed: its own typed error, a defect (it
 * threw or died), or what it produced cannot be stored (an invalid emit,
 * a state or payload that is not JSON).
 *
 * @since 0.1.0
 * @category errors
 */
export type StepFailure<E> =
  | { readonly _tag: "Error"; readonly error: E }
  | { readonly _tag: "Defect"; readonly defect: unknown }
  | { readonly _tag: "Refused"; readonly reason: string }

/**
 * A step failed; `reason` keeps the step's own error with its type.
 *
 * @since 0.1.0
 * @category errors
 */
export class StepFailed<E = unknown> extends Data.TaggedError("StepFailed")<{
  readonly step: string
  readonly reason: StepFailure<E>
}> {
  /** What failed, for history and status. */
  get detail(): string {
    const reason = this.reason
    if (reason._tag === "Refused") return reason.reason
    return describe(reason._tag === "Error" ? reason.error : reason.defect)
  }

  override get message(): string {
    return `step ${this.step} failed: ${this.detail}`
  }
}

/**
 * A named step; `E` is its own error type.
 *
 * @since 0.1.0
 * @category models
 */
export interface Step<S, Start, R, E = unknown> {
  readonly name: string
  readonly run: (state: S, input: Input<Start>) => Effect.Effect<StepResult<S>, StepFailed<E>, R>
  readonly compensate: ((state: S) => Effect.Effect<StepResult<S>, StepFailed<E>, R>) | undefined
  readonly awaits: Await | undefined
}

/**
 * Defines a step.
 *
 * @example
 * ```ts
 * import { Aggregate, Saga } from "@mire/core"
 * import { Effect, Schema } from "effect"
 *
 * const Reserved = Schema.TaggedStruct("Reserved", { order: Schema.String })
 * const Released = Schema.TaggedStruct("Released", { order: Schema.String })
 * const Stock = Aggregate.make({
 *   category: "stock",
 *   events: Schema.Union(Reserved, Released),
 *   initial: { reserved: 0 },
 *   apply: (state, event) => ({ reserved: state.reserved + (event._tag === "Reserved" ? 1 : -1) })
 * })
 *
 * interface Fulfilment {
 *   readonly order: string
 *   readonly sku: string
 * }
 *
 * // Reserves the item; when a later step fails, the saga releases it.
 * const reserve = Saga.step<Fulfilment>("reserve-stock", {
 *   run: (state) => Effect.map(Saga.emit(Stock, state.sku, Reserved.make({ order: state.order })), (e) => ({ emit: [e] })),
 *   compensate: (state) => Effect.map(Saga.emit(Stock, state.sku, Released.make({ order: state.order })), (e) => ({ emit: [e] }))
 * })
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const step = <S, Start = never, R = never, E = unknown>(
  name: string,
  options: {
    readonly run: (state: S, input: Input<Start>) => Effect.Effect<StepResult<S>, E, R>
    readonly compensate?: (state: S) => Effect.Effect<StepResult<S>, E, R>
    readonly awaits?: Await
  }
): Step<S, Start, R, E> => {
  const compensate = options.compensate
  // A step that fails, throws or dies has failed: the saga compensates (it never kills its worker).
  const guard = <A, R2>(effect: () => Effect.Effect<A, E, R2>): Effect.Effect<A, StepFailed<E>, R2> =>
    Effect.suspend(effect).pipe(
      Effect.mapError((error) => new StepFailed<E>({ step: name, reason: { _tag: "Error", error } })),
      Effect.catchAllDefect((defect) => Effect.fail(new StepFailed<E>({ step: name, reason: { _tag: "Defect", defect } })))
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
 * ```ts
 * import { Aggregate, Saga } from "@mire/core"
 * import { Schema } from "effect"
 *
 * const Charged = Schema.TaggedStruct("Charged", {})
 * const Declined = Schema.TaggedStruct("Declined", {})
 * const Payment = Aggregate.make({
 *   category: "payment",
 *   events: Schema.Union(Charged, Declined),
 *   initial: { charged: false },
 *   apply: (_, event) => ({ charged: event._tag === "Charged" })
 * })
 *
 * // The step waits for a Charged or Declined reply; after 30 seconds without one it fails and the saga compensates.
 * const awaitsPayment = Saga.awaitEvent(Payment, { timeout: "30 seconds" })
 * assert.deepStrictEqual(awaitsPayment.types, ["payment.charged", "payment.declined"])
 * ```
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
  /** Decodes (upcasting) a start event: as recorded, or as an instance keeps it. */
  readonly decode: (recorded: StartEvent) => Effect.Effect<Start, EventDecodeError>
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
  /** Its steps, each with its own error type. */
  readonly steps: ReadonlyArray<Step<S, Start, R>>
}

/**
 * Defines a saga.
 *
 * @example
 * ```ts
 * import { Aggregate, Saga } from "@mire/core"
 * import { Effect, Option, Schema } from "effect"
 *
 * const Placed = Schema.TaggedStruct("Placed", { sku: Schema.String })
 * const Cancelled = Schema.TaggedStruct("Cancelled", {})
 * const OrderEvent = Schema.Union(Placed, Cancelled)
 * const Order = Aggregate.make({
 *   category: "order",
 *   events: OrderEvent,
 *   initial: { sku: "", open: false },
 *   apply: (state, event) => (event._tag === "Placed" ? { sku: event.sku, open: true } : { ...state, open: false })
 * })
 * const FulfilmentState = Schema.Struct({ order: Schema.String, sku: Schema.String })
 *
 * const reserve = Saga.step<typeof FulfilmentState.Type, typeof OrderEvent.Type>("reserve", {
 *   run: (state) => Effect.as(Effect.log(`reserving ${state.sku} for ${state.order}`), {})
 * })
 *
 * // One instance per placed order, keyed by the order's stream.
 * const Fulfilment = Saga.make({
 *   name: "fulfilment",
 *   state: FulfilmentState,
 *   startOn: {
 *     aggregate: Order,
 *     start: (event, recorded) =>
 *       event._tag === "Placed"
 *         ? Option.some({ instanceId: recorded.streamId, state: { order: recorded.streamId, sku: event.sku } })
 *         : Option.none()
 *   },
 *   steps: [reserve]
 * })
 * ```
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
  // Stored as a JSON object: the state's encoded form is checked to be one on the way in and out.
  state: Schema.compose(JsonObject, options.state),
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
 * ```ts
 * import { Aggregate, Saga } from "@mire/core"
 * import { Effect, Schema } from "effect"
 *
 * const Reserved = Schema.TaggedStruct("Reserved", { order: Schema.String })
 * const Released = Schema.TaggedStruct("Released", { order: Schema.String })
 * const Stock = Aggregate.make({
 *   category: "stock",
 *   events: Schema.Union(Reserved, Released),
 *   initial: { reserved: 0 },
 *   apply: (state, event) => ({ reserved: state.reserved + (event._tag === "Reserved" ? 1 : -1) })
 * })
 *
 * const reserved = Saga.emit(Stock, "sku-1", Reserved.make({ order: "order-7" }))
 * Effect.runPromise(reserved).then((emit) => assert.strictEqual(emit.streamId, "stock-sku-1"))
 * ```
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
 * Answers a waiting step: turns a typed result into the response event, appended to `id`'s stream with the request's
 * correlation id. A `Left` is an error response: the awaiting step fails and
 * the saga compensates.
 *
 * @example
 * ```ts
 * import { Aggregate, Saga } from "@mire/core"
 * import { Either, Schema } from "effect"
 *
 * const Charged = Schema.TaggedStruct("Charged", {})
 * const Declined = Schema.TaggedStruct("Declined", {})
 * const Payment = Aggregate.make({
 *   category: "payment",
 *   events: Schema.Union(Charged, Declined),
 *   initial: { charged: false },
 *   apply: (_, event) => ({ charged: event._tag === "Charged" })
 * })
 *
 * // The payment service answers a charge request from the outbox, carrying the request's correlation id back.
 * const answer = (orderId: string, correlationId: string | undefined, charged: boolean) =>
 *   Saga.reply(Payment, orderId, correlationId, charged ? Either.right(Charged.make({})) : Either.left(Declined.make({})))
 * ```
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
  return Predicate.hasProperty(marker, "isError") && marker.isError === true
}
