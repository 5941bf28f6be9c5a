/**
 * The storage primitives of sagas: instance rows, their history, and the
 * outbox. A worker claims a due instance in one short statement of its own
 * (a claim token, hidden from other workers until the claim expires), runs
 * the step with no transaction open, then writes the outcome inside the
 * event store's ambient transaction, fenced by the claim, so an outcome
 * commits atomically with the events it emits, and only once.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Stream from "effect/Stream"
import type { StoreError } from "./EventStoreError.js"
import * as Memory from "./internal/memory/eventStore.js"
import * as MemorySagaStore from "./internal/memory/sagaStore.js"
import { JsonObject } from "./RecordedEvent.js"
import type * as Saga from "./Saga.js"

/**
 * The status of a saga instance.
 *
 * @since 0.1.0
 * @category models
 */
export const Status = Schema.Literal("running", "waiting", "compensating", "completed", "failed")

/**
 * @since 0.1.0
 * @category models
 */
export type Status = typeof Status.Type

/**
 * A saga's start event as stored for its first step (at its current
 * version), as JSON: `globalPosition` is a decimal string.
 *
 * @since 0.1.0
 * @category schemas
 */
export const StartEvent: Schema.Schema<Saga.StartEvent, StartEventJson> = Schema.Struct({
  streamId: Schema.String,
  streamVersion: Schema.Int,
  globalPosition: Schema.BigInt,
  eventType: Schema.String,
  schemaVersion: Schema.Int,
  data: JsonObject
})

/**
 * The JSON form of {@link StartEvent}.
 *
 * @since 0.1.0
 * @category models
 */
export interface StartEventJson {
  readonly streamId: string
  readonly streamVersion: number
  readonly globalPosition: string
  readonly eventType: string
  readonly schemaVersion: number
  readonly data: JsonObject
}

/**
 * What a step receives, as stored: the step input itself, its start event
 * still encoded (decoded, upcast, when the step runs).
 *
 * @since 0.1.0
 * @category models
 */
export type StoredInput = Saga.Input<Saga.StartEvent>

/**
 * The JSON form of {@link StoredInput}, as the `input` column keeps it.
 *
 * @since 0.1.0
 * @category models
 */
export type StoredInputJson =
  | { readonly _tag: "Start"; readonly event: StartEventJson }
  | { readonly _tag: "Response"; readonly eventType: string; readonly data: JsonObject }
  | { readonly _tag: "None" }
  | LegacyInputJson

/**
 * The form mire 0.1 wrote (`{"kind": …}`), still read: an instance stored by
 * it (or by a worker of that version during a rolling deploy) goes on with
 * its next step. A start event of that form did not record where it was
 * recorded; {@link legacyStreamId} says so where its stream id would be.
 *
 * @since 0.1.0
 * @category models
 */
export type LegacyInputJson =
  | {
      readonly kind: "start"
      readonly eventType: string
      readonly schemaVersion: number
      readonly data: JsonObject
    }
  | { readonly kind: "response"; readonly eventType: string; readonly data: JsonObject }
  | { readonly kind: "none" }

/**
 * The stream id of a start event read from the 0.1 form, which did not keep
 * its stream or position (it only names the event if it no longer decodes).
 *
 * @since 0.1.0
 * @category models
 */
export const legacyStreamId = "(a start event stored by mire 0.1: stream not recorded)"

const Start = Schema.TaggedStruct("Start", { event: StartEvent })
const Response = Schema.TaggedStruct("Response", { eventType: Schema.String, data: JsonObject })
const None = Schema.TaggedStruct("None", {})

const legacy = Schema.Union(
  Schema.transform(
    Schema.Struct({
      kind: Schema.Literal("start"),
      eventType: Schema.String,
      schemaVersion: Schema.Int,
      data: JsonObject
    }),
    Schema.typeSchema(Start),
    {
      strict: true,
      decode: (old) => ({
        _tag: "Start" as const,
        event: {
          streamId: legacyStreamId,
          streamVersion: 0,
          globalPosition: 0n,
          eventType: old.eventType,
          schemaVersion: old.schemaVersion,
          data: old.data
        }
      }),
      encode: (input) => ({
        kind: "start" as const,
        eventType: input.event.eventType,
        schemaVersion: input.event.schemaVersion,
        data: input.event.data
      })
    }
  ),
  Schema.transform(
    Schema.Struct({ kind: Schema.Literal("response"), eventType: Schema.String, data: JsonObject }),
    Schema.typeSchema(Response),
    {
      strict: true,
      decode: (old) => ({ _tag: "Response" as const, eventType: old.eventType, data: old.data }),
      encode: (input) => ({ kind: "response" as const, eventType: input.eventType, data: input.data })
    }
  ),
  Schema.transform(Schema.Struct({ kind: Schema.Literal("none") }), Schema.typeSchema(None), {
    strict: true,
    decode: () => ({ _tag: "None" as const }),
    encode: () => ({ kind: "none" as const })
  })
)

/**
 * {@link StoredInput} from its JSON form (or the 0.1 form, {@link LegacyInputJson});
 * a stored input of any other shape fails to decode. It always encodes to
 * the current form.
 *
 * @since 0.1.0
 * @category schemas
 */
export const StoredInput: Schema.Schema<StoredInput, StoredInputJson> = Schema.Union(Start, Response, None, legacy)

/**
 * A saga instance as stored.
 *
 * @since 0.1.0
 * @category models
 */
export interface InstanceRow {
  readonly sagaName: string
  readonly instanceId: string
  readonly correlationId: string
  readonly status: Status
  /** The step to run (or awaiting); while compensating, the step to compensate. */
  readonly stepIndex: number
  readonly state: unknown
  readonly input: StoredInput | null
  readonly awaiting: ReadonlyArray<string> | null
  readonly deadline: Date | null
  readonly dueAt: Date
  readonly error: string | null
  /** Failed attempts of the current transition (a `StoreError` while writing it, a failing compensation). */
  readonly attempts: number
  /** The last such failure, until a transition commits. */
  readonly lastError: string | null
  readonly version: number
  readonly updatedAt: Date
}

/**
 * A message for the world outside the database.
 *
 * @since 0.1.0
 * @category models
 */
export interface OutboxMessage {
  readonly idempotencyKey: string
  readonly topic: string
  readonly payload: JsonObject
}

/**
 * An outbox message as the runner hands it to a store: its payload checked
 * to be JSON and written as `payloadJson`, which the store keeps as is
 * (never serialising `payload` again).
 *
 * @since 0.1.0
 * @category models
 */
export interface StorableMessage extends OutboxMessage {
  readonly payloadJson: string
}

/**
 * An outbox row.
 *
 * @since 0.1.0
 * @category models
 */
export interface OutboxRow extends OutboxMessage {
  readonly id: bigint
  readonly attempts: number
}

/**
 * One history entry: a step's outcome.
 *
 * @since 0.1.0
 * @category models
 */
export interface HistoryEntry {
  readonly sagaName: string
  readonly instanceId: string
  readonly step: string
  readonly outcome: string
  readonly workerId: string
}

/**
 * @since 0.1.0
 * @category storage
 */
export interface SagaStore {
  /** Inserts a new instance unless one with its id exists; `true` when inserted. */
  readonly insert: (row: InstanceRow) => Effect.Effect<boolean, StoreError>
  /**
   * Outside any transaction: claims one due instance that no live claim
   * holds (skipping rows other transactions lock), marking it with `token`
   * until `until`, in one short statement; returns it as claimed.
   */
  readonly claimDue: (
    sagaName: string,
    now: Date,
    token: string,
    until: Date
  ) => Effect.Effect<Option.Option<InstanceRow>, StoreError>
  /**
   * Inside a transaction: locks the instance and tells whether it still
   * carries `token` at `version` (its claim was not taken over, nothing
   * else changed it).
   */
  readonly holdsClaim: (
    sagaName: string,
    instanceId: string,
    token: string,
    version: number
  ) => Effect.Effect<boolean, StoreError>
  /**
   * Outside any transaction: moves the expiry of the claim `token` holds on
   * the instance to `until`, in one short statement (a step that outlives
   * `claimTimeout` keeps its claim while it runs); with `failure`, also
   * records a failed attempt of the transition (shown in status) without
   * releasing the claim. `false` when the instance no longer carries
   * `token` (its claim was taken over, or its outcome written): then
   * nothing changes.
   */
  readonly extendClaim: (
    sagaName: string,
    instanceId: string,
    token: string,
    until: Date,
    failure?: { readonly attempts: number; readonly lastError: string }
  ) => Effect.Effect<boolean, StoreError>
  /** Inside a transaction: locks the waiting instance with this correlation id. */
  readonly claimWaiting: (correlationId: string) => Effect.Effect<Option.Option<InstanceRow>, StoreError>
  /** Writes an instance's new state and clears its claim (inside a transaction that locked it). */
  readonly update: (row: InstanceRow) => Effect.Effect<void, StoreError>
  readonly appendHistory: (entry: HistoryEntry) => Effect.Effect<void, StoreError>
  /** Queues outbox messages, storing each `payloadJson` (a key seen before is ignored). */
  readonly enqueue: (messages: ReadonlyArray<StorableMessage>) => Effect.Effect<void, StoreError>
  /**
   * Claims up to `limit` pending messages due at `now`: each is hidden from
   * other publishers until `visibleAt` and its attempt counted, in one short
   * transaction of its own (publishing happens outside any transaction).
   */
  readonly claimOutbox: (now: Date, visibleAt: Date, limit: number) => Effect.Effect<ReadonlyArray<OutboxRow>, StoreError>
  readonly markPublished: (id: bigint) => Effect.Effect<void, StoreError>
  readonly markFailed: (id: bigint, retryAt: Date, error: string) => Effect.Effect<void, StoreError>
  /** Every outbox row (status pages, tests). */
  readonly outbox: Effect.Effect<ReadonlyArray<OutboxRow & { readonly published: boolean }>, StoreError>
  readonly list: (sagaName: string) => Effect.Effect<ReadonlyArray<InstanceRow>, StoreError>
  /** Instances of a saga by status (for the `mire_saga_instances` gauge). */
  readonly counts: (sagaName: string) => Effect.Effect<ReadonlyMap<Status, number>, StoreError>
  readonly history: (sagaName: string, instanceId: string) => Effect.Effect<ReadonlyArray<HistoryEntry>, StoreError>
  /** Wakes waiting workers when the current transaction commits. */
  readonly notify: (sagaName: string) => Effect.Effect<void, StoreError>
  readonly wakeups: Stream.Stream<string, StoreError>
}

/**
 * The `SagaStore` tag.
 *
 * @since 0.1.0
 * @category tags
 */
export const SagaStore: Context.Tag<SagaStore, SagaStore> = Context.GenericTag<SagaStore>("@mire/core/SagaStore")

/**
 * The in-memory `SagaStore`, over the driver of `EventStore.layerMemory`
 * (`InMemory.layer` provides both): rows, history and outbox written when
 * the ambient in-memory transaction commits, claims taken past skip-locked
 * row locks, as on Postgres.
 *
 * @example
 * ```ts
 * import { EventStore, SagaStore } from "@mire/core"
 * import { Effect, Layer } from "effect"
 *
 * const layer = SagaStore.layerMemory.pipe(Layer.provideMerge(EventStore.layerMemory))
 * const program = Effect.flatMap(SagaStore.SagaStore, (store) => store.list("fulfilment"))
 * const runnable = program.pipe(Effect.provide(layer))
 * ```
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<SagaStore, never, Memory.Driver> = Layer.effect(
  SagaStore,
  Effect.flatMap(Memory.Driver, (driver) => MemorySagaStore.make(driver))
)
