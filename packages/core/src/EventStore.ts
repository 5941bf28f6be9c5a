/**
 * The `EventStore` service: append, read, load, save, transactions and
 * snapshots. One tag, two layers (`PgEventStore.layer` from `@mire/pg` and
 * {@link layerMemory}), and accessor functions so a program can write
 * `EventStore.save(root)`.
 *
 * A store layer supplies only the {@link Storage} primitives; everything
 * else (validation, encoding, the fold, version checks, snapshots) is built
 * once here by {@link make}, so both stores behave the same.
 *
 * @since 0.1.0
 */
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import type * as Tracer from "effect/Tracer"
import * as Aggregate from "./Aggregate.js"
import * as AggregateRoot from "./AggregateRoot.js"
import type { ConcurrencyConflict, EventDecodeError, StoreError, StreamArchived, StreamCorrupt, StreamDeleted } from "./EventStoreError.js"
import { InvalidInput, StreamNotFound } from "./EventStoreError.js"
import * as ExpectedVersion from "./ExpectedVersion.js"
import * as Metrics from "./Metrics.js"
import type { DeadLetterPending, SnapshotRequired } from "./EventStoreError.js"
import { StreamTruncated } from "./EventStoreError.js"
import * as Retention from "./Retention.js"
import type { CommittedEvents, EventMetadata, JsonObject, NewEvent, RecordedEvent } from "./RecordedEvent.js"
import * as Snapshot from "./Snapshot.js"
import * as StreamId from "./StreamId.js"
import * as Json from "./internal/json.js"
import { countedSpan } from "./internal/release.js"
import * as Memory from "./internal/memory/eventStore.js"
import * as Uuid from "./internal/uuid.js"

/**
 * Read direction.
 *
 * @since 0.1.0
 * @category models
 */
export type Direction = "forward" | "backward"

/**
 * Options for reading one stream: `from` is a stream version (inclusive; the
 * default is the start going forward, the end going backward), `limit` caps
 * the number of events, `pageSize` the rows fetched per round trip (by
 * default 10,000, so most streams are read in one statement).
 *
 * @since 0.1.0
 * @category models
 */
export interface ReadStreamOptions {
  readonly from?: number
  readonly direction?: Direction
  readonly limit?: number
  readonly pageSize?: number
}

/**
 * Options for reading a category or the whole log, by global position
 * (`from` inclusive). This order is insertion order, not commit order: use a
 * subscription to follow the log as it grows. Without a `pageSize`, pages
 * start at 1,000 rows and double up to 10,000.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReadLogOptions {
  readonly from?: bigint
  readonly direction?: Direction
  readonly limit?: number
  readonly pageSize?: number
  /** `readCategory` only: also read archived streams (left out by default). */
  readonly includeArchived?: boolean
}

/**
 * Options of a load: `includeArchived` loads an archived stream (by
 * default a load leaves it out: `None`, as if it did not exist).
 *
 * @since 0.2.0
 * @category models
 */
export interface LoadOptions {
  readonly includeArchived?: boolean
}

/**
 * A stream's lifecycle state, as a load page reports it: absent for a live
 * stream.
 *
 * @since 0.2.0
 * @category storage
 */
export type StreamState = "archived" | "deleted"

/**
 * The event type of a deleted stream's tombstone: the one event left in the
 * stream, at the deleted stream's version plus one, with data
 * `{ deletedVersion }`. Event types starting with `$` are mire's own: an
 * append refuses them.
 *
 * @since 0.2.0
 * @category constants
 */
export const streamDeletedType = "$StreamDeleted"

/**
 * Is this one of mire's own system events ({@link streamDeletedType}),
 * written by mire rather than by an aggregate? Only mire's own types are: an
 * event with another `$…` type stored before 0.2 (which did not reserve `$`)
 * is a user event, delivered to projections as before (new appends of `$`
 * types are refused).
 *
 * @since 0.2.0
 * @category predicates
 */
export const isSystemEvent = (event: { readonly eventType: string }): boolean => event.eventType === streamDeletedType

/**
 * One stream's part of a batched append.
 *
 * @since 0.1.0
 * @category models
 */
export interface AppendRequest {
  readonly streamId: string
  readonly category: string
  readonly expected: ExpectedVersion.ExpectedVersion
  readonly events: ReadonlyArray<NewEvent>
}

/**
 * An event ready for storage: validated, with its id (lower case) and
 * metadata fixed. `dataJson` and `metadataJson` are the JSON texts of `data`
 * and `metadata`, written once by the validation (keys in `jsonb` order): a
 * store keeps exactly what `JSON.parse` of them returns.
 *
 * @since 0.1.0
 * @category storage
 */
export interface StorableEvent {
  readonly eventId: string
  readonly eventType: string
  readonly schemaVersion: number
  readonly data: JsonObject
  readonly metadata: EventMetadata
  readonly dataJson: string
  readonly metadataJson: string
  /** Did the caller choose `eventId` (so it may already be stored)? */
  readonly eventIdGiven: boolean
}

/**
 * A snapshot ready for storage: its state checked to be JSON, with its text.
 *
 * @since 0.1.0
 * @category storage
 */
export interface StorableSnapshot extends Snapshot.StoredSnapshot {
  readonly stateJson: string
}

/**
 * A validated append request, as a storage primitive receives it.
 *
 * @since 0.1.0
 * @category storage
 */
export interface StorableAppend {
  readonly streamId: StreamId.StreamId
  readonly category: StreamId.Category
  readonly expected: ExpectedVersion.ExpectedVersion
  readonly events: ReadonlyArray<StorableEvent>
}

/**
 * Events of one stream read forward by a load, with the stream's version as
 * the same read saw it (so a load knows when it has read everything without
 * asking again).
 *
 * @since 0.1.0
 * @category storage
 */
export interface LoadPage {
  /** The stream's version as of this read; 0 when `events` is empty. */
  readonly version: number
  readonly events: ReadonlyArray<RecordedEvent>
  /** The stream's lifecycle state as of this read (absent: live, or `events` is empty). */
  readonly state?: StreamState | undefined
}

/**
 * What a fold reads of a stored event (a `RecordedEvent` is one): its
 * stream, version, position, type, schema version and data. A load needs
 * nothing else, so a store may read only these.
 *
 * @since 0.1.0
 * @category storage
 */
export type FoldableEvent = Pick<
  RecordedEvent,
  "streamId" | "streamVersion" | "globalPosition" | "eventType" | "schemaVersion" | "data"
>

/**
 * Events of one stream read forward for a fold (see {@link LoadPage}), as
 * {@link FoldableEvent}s.
 *
 * @since 0.1.0
 * @category storage
 */
export interface FoldPage {
  /** The stream's version as of this read; 0 when `events` is empty. */
  readonly version: number
  readonly events: ReadonlyArray<FoldableEvent>
  /** The stream's lifecycle state as of this read (absent: live, or `events` is empty). */
  readonly state?: StreamState | undefined
}

/**
 * What `loadSnapshotted` reads in one go: the stream's stored snapshot and
 * the events from the snapshot's version (inclusive: the first event proves
 * the stream has that version), or from version 1 when there is no snapshot.
 *
 * @since 0.1.0
 * @category storage
 */
export interface SnapshotLoadPage extends FoldPage {
  readonly snapshot: Option.Option<Snapshot.StoredSnapshot>
}

/**
 * The primitives a store layer supplies. Inputs arrive validated, ids
 * branded; the ids of the events a primitive returns were validated when
 * they were appended, so a store brands them as it reads them
 * (`StreamId.fromStored`), without checking them again.
 *
 * @since 0.1.0
 * @category storage
 */
export interface Storage {
  /**
   * Appends all requests atomically (all or nothing), checking each
   * expectation. An event id already stored is `InvalidInput` naming it.
   * `span`, when given, is the span the append belongs to
   * (`EventStore.appendMany`'s, which is not put in the context): a store that
   * traces its statements makes it their parent.
   */
  readonly append: (
    requests: ReadonlyArray<StorableAppend>,
    span?: Tracer.AnySpan
  ) => Effect.Effect<ReadonlyArray<CommittedEvents>, AppendError>
  /** Up to `limit` events of a stream from version `from` (inclusive) in `direction`. */
  readonly readStreamPage: (
    streamId: StreamId.StreamId,
    from: number,
    direction: Direction,
    limit: number
  ) => Effect.Effect<ReadonlyArray<RecordedEvent>, StoreError>
  /**
   * One read (one statement): up to `limit` events of a stream from version `from` forward, and its
   * version. `span`, when given, is the span the read belongs to (the load's own, which is not put
   * in the context): a store that traces its statements makes it their parent.
   */
  readonly loadPage: (
    streamId: StreamId.StreamId,
    from: number,
    limit: number,
    span?: Tracer.AnySpan
  ) => Effect.Effect<LoadPage, StoreError>
  /**
   * {@link loadPage} with only what a fold reads: a load uses it when the store has it
   * (it spares reading and decoding the rest of every row), `loadPage` otherwise.
   */
  readonly loadFoldPage?: (
    streamId: StreamId.StreamId,
    from: number,
    limit: number,
    span?: Tracer.AnySpan
  ) => Effect.Effect<FoldPage, StoreError>
  /**
   * One read (one statement): the stream's snapshot, up to `limit` events from it (see
   * {@link SnapshotLoadPage}), and its version; `span` as for {@link loadPage}.
   */
  readonly loadSnapshotPage: (
    streamId: StreamId.StreamId,
    limit: number,
    span?: Tracer.AnySpan
  ) => Effect.Effect<SnapshotLoadPage, StoreError>
  /**
   * Up to `limit` events by global position from `from` (inclusive), optionally of some categories;
   * with `excludeArchived`, none of an archived stream.
   */
  readonly readLogPage: (
    categories: ReadonlyArray<StreamId.Category> | undefined,
    from: bigint,
    direction: Direction,
    limit: number,
    excludeArchived?: boolean
  ) => Effect.Effect<ReadonlyArray<RecordedEvent>, StoreError>
  /**
   * Marks a stream archived (`true`) or live (`false`); marking it as it already is changes
   * nothing. A deleted stream is `StreamDeleted`, a missing one `StreamNotFound`.
   */
  readonly setArchived: (
    streamId: StreamId.StreamId,
    archived: boolean
  ) => Effect.Effect<void, StreamNotFound | StreamDeleted | StoreError>
  /**
   * In one transaction: removes the stream's events and snapshot, appends `tombstone` at its
   * version plus one (the only event left in it, its data set by the store to
   * `{ deletedVersion }`, the version deleted), and marks the stream deleted with its first
   * retained version the tombstone's. Returns the tombstone's version; a stream already deleted
   * is left as it is (its tombstone's version is returned), a missing one is `StreamNotFound`.
   */
  readonly deleteStream: (
    streamId: StreamId.StreamId,
    tombstone: StorableEvent
  ) => Effect.Effect<number, StreamNotFound | StoreError>
  /** The stream's version (0 when it does not exist). */
  readonly streamVersion: (streamId: StreamId.StreamId) => Effect.Effect<number, StoreError>
  /** Locks the stream until the ambient transaction ends; returns its version (0: no stream, no lock). */
  readonly lockStream: (streamId: StreamId.StreamId) => Effect.Effect<number, StoreError>
  /** Runs an effect in one transaction (nested calls join it, as a savepoint on Postgres). */
  readonly transaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | StoreError, R>
  /** Is the current fiber inside a transaction? */
  readonly inTransaction: Effect.Effect<boolean>
  /** The current transaction's id (assigning one if it has none yet). */
  readonly currentTransactionId: Effect.Effect<bigint, StoreError>
  readonly readSnapshot: (streamId: StreamId.StreamId) => Effect.Effect<Option.Option<Snapshot.StoredSnapshot>, StoreError>
  readonly writeSnapshot: (snapshot: StorableSnapshot) => Effect.Effect<void, StoreError>
  /**
   * A stream's {@link Retention.Extent}, `None` when it does not exist. With `lock` (inside a
   * transaction) its row stays locked until the transaction ends; with a `cutoff`, `youngFrom`
   * is its first stored version recorded at or after it.
   */
  readonly streamExtent: (
    streamId: StreamId.StreamId,
    options: { readonly lock: boolean; readonly cutoff?: Date | undefined }
  ) => Effect.Effect<Option.Option<Retention.Extent>, StoreError>
  /**
   * Inside a transaction, under the stream's lock (see {@link streamExtent}): removes its
   * events below version `before` and records `before` as its first retained version, in one
   * statement; returns how many events it removed.
   */
  readonly removeBefore: (streamId: StreamId.StreamId, before: number) => Effect.Effect<number, StoreError>
  /** Up to `limit` ids of a category's streams (deleted ones left out), in id order, after `after`. */
  readonly streamIdsPage: (
    category: StreamId.Category,
    after: StreamId.StreamId | undefined,
    limit: number
  ) => Effect.Effect<ReadonlyArray<StreamId.StreamId>, StoreError>
}

/**
 * Limits on what an append stores, checked before any I/O.
 *
 * - `maxDepth`: nesting of objects and arrays in an event's `data` or
 *   `metadata` (the object itself is level 1), and in a snapshot's state.
 * - `maxEventSize`: the JSON text of an event's `data` and `metadata`
 *   together (or of a snapshot's state), in UTF-16 code units.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly maxDepth: number
  readonly maxEventSize: number
}

/**
 * The default limits: depth 64, 1 MiB (1,048,576 code units) per event.
 *
 * @since 0.1.0
 * @category models
 */
export const defaults: Options = { maxDepth: 64, maxEventSize: 1_048_576 }

/**
 * The error for an event id that is already stored, as both stores report it.
 *
 * @since 0.1.0
 * @category storage
 */
export const duplicateEventId = (requests: ReadonlyArray<StorableAppend>, eventId: string): InvalidInput => {
  for (const request of requests) {
    const index = request.events.findIndex((event) => event.eventId === eventId)
    if (index >= 0) {
      return new InvalidInput({
        field: `events[${index}].eventId`,
        reason: `event id ${eventId} is already stored (in ${request.streamId})`
      })
    }
  }
  return new InvalidInput({ field: "eventId", reason: `event id ${eventId} is already stored` })
}

/**
 * The errors a load can fail with.
 *
 * @since 0.1.0
 * @category models
 */
export type LoadError = InvalidInput | EventDecodeError | StreamCorrupt | StreamTruncated | StoreError

/**
 * The errors of a truncation.
 *
 * @since 0.2.0
 * @category models
 */
export type TruncateError = InvalidInput | StreamNotFound | StreamDeleted | SnapshotRequired | DeadLetterPending | StoreError

/**
 * Options of a truncation: `snapshotVersion`, required, is the snapshot
 * version (the aggregate's snapshot `version`) the stream's aggregate loads
 * from, or the aggregate itself: a stored snapshot of another version counts
 * as none. `dryRun` decides without locking or removing anything, and says
 * what would be removed.
 *
 * @since 0.2.0
 * @category models
 */
export interface TruncateOptions {
  readonly snapshotVersion: Retention.SnapshotVersionOf
  readonly dryRun?: boolean
}

/**
 * What a truncation did: the stream's first retained version now, and how
 * many events it removed (0 when the stream was already truncated that far).
 *
 * @since 0.2.0
 * @category models
 */
export interface Truncated {
  readonly streamId: string
  readonly truncatedBefore: number
  readonly removed: number
}

/**
 * Options of retention: `snapshotVersion`, required, as for a truncation
 * (see {@link TruncateOptions}: only a snapshot of that version is a base);
 * `dryRun` decides and reports without removing anything (and without
 * locking).
 *
 * @since 0.2.0
 * @category models
 */
export interface RetentionOptions {
  readonly snapshotVersion: Retention.SnapshotVersionOf
  readonly dryRun?: boolean
}

/**
 * The errors an append or save can fail with.
 *
 * @since 0.1.0
 * @category models
 */
export type AppendError = ConcurrencyConflict | InvalidInput | StreamArchived | StreamDeleted | StoreError

/**
 * The errors of archiving, unarchiving or deleting a stream.
 *
 * @since 0.2.0
 * @category models
 */
export type LifecycleError = InvalidInput | StreamNotFound | StreamDeleted | StoreError

/**
 * An aggregate root of any aggregate, for heterogeneous batches.
 *
 * @since 0.1.0
 * @category models
 */
// biome-ignore lint/suspicious/noExplicitAny: roots are invariant in state and event; a batch mixes aggregates
export type AnyRoot = AggregateRoot.AggregateRoot<any, any>

/**
 * The event store service.
 *
 * @since 0.1.0
 * @category models
 */
export interface EventStore {
  /** Appends encoded events to one stream, checking `expected`. */
  readonly append: (
    streamId: string,
    category: string,
    expected: ExpectedVersion.ExpectedVersion,
    events: ReadonlyArray<NewEvent>
  ) => Effect.Effect<CommittedEvents, AppendError>
  /** Appends to several streams in one transaction; one conflict writes nothing and names its stream. */
  readonly appendMany: (
    requests: ReadonlyArray<AppendRequest>
  ) => Effect.Effect<ReadonlyArray<CommittedEvents>, AppendError>
  readonly readStream: (
    streamId: string,
    options?: ReadStreamOptions
  ) => Stream.Stream<RecordedEvent, InvalidInput | StoreError>
  /**
   * {@link readStream}'s events in one array: the same events, options and errors, read page by
   * page without a `Stream` (cheaper when the caller wants them all in memory anyway).
   */
  readonly readStreamEvents: (
    streamId: string,
    options?: ReadStreamOptions
  ) => Effect.Effect<ReadonlyArray<RecordedEvent>, InvalidInput | StoreError>
  readonly readCategory: (
    category: string,
    options?: ReadLogOptions
  ) => Stream.Stream<RecordedEvent, InvalidInput | StoreError>
  readonly readAll: (options?: ReadLogOptions) => Stream.Stream<RecordedEvent, InvalidInput | StoreError>
  readonly streamVersion: (streamId: string) => Effect.Effect<number, InvalidInput | StoreError>
  /**
   * Replays an aggregate; `None` when its stream does not exist, was deleted, or is archived
   * (unless `includeArchived`).
   */
  readonly load: <S, E>(
    aggregate: Aggregate.Aggregate<S, E>,
    id: string,
    options?: LoadOptions
  ) => Effect.Effect<Option.Option<AggregateRoot.AggregateRoot<S, E>>, LoadError>
  /** Replays an aggregate, or a new root at version 0. */
  readonly loadOrDefault: <S, E>(
    aggregate: Aggregate.Aggregate<S, E>,
    id: string,
    options?: LoadOptions
  ) => Effect.Effect<AggregateRoot.AggregateRoot<S, E>, LoadError>
  /**
   * Inside {@link transaction}: locks the stream's row until the transaction
   * ends, then loads it. A missing stream takes no lock (there is no row yet).
   */
  readonly loadForUpdate: <S, E>(
    aggregate: Aggregate.Aggregate<S, E>,
    id: string,
    options?: LoadOptions
  ) => Effect.Effect<Option.Option<AggregateRoot.AggregateRoot<S, E>>, LoadError>
  /** Saves the pending events; returns the root with `pending` cleared and `version` advanced. */
  readonly save: <S, E>(root: AggregateRoot.AggregateRoot<S, E>) => Effect.Effect<AggregateRoot.AggregateRoot<S, E>, AppendError>
  /** Saves several roots in one transaction, all or nothing. */
  readonly saveMany: <const Roots extends ReadonlyArray<AnyRoot>>(roots: Roots) => Effect.Effect<Roots, AppendError>
  /** Loads from the newest valid snapshot plus the events after it. */
  readonly loadSnapshotted: <S, E>(
    aggregate: Aggregate.Aggregate<S, E>,
    id: string,
    options?: LoadOptions
  ) => Effect.Effect<Option.Option<AggregateRoot.AggregateRoot<S, E>>, LoadError>
  /** Saves, then writes a snapshot when the aggregate's policy says so. */
  readonly saveSnapshotting: <S, E>(
    root: AggregateRoot.AggregateRoot<S, E>
  ) => Effect.Effect<AggregateRoot.AggregateRoot<S, E>, AppendError>
  /**
   * Runs `effect` in one transaction: every store call and every `sql`
   * statement inside it. Commits on success; rolls back on failure, defect
   * or interruption.
   */
  readonly transaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | StoreError, R>
  /** The current transaction's id (inside {@link transaction}; assigns one if needed). */
  readonly currentTransactionId: Effect.Effect<bigint, StoreError>
  /**
   * Makes a stream read-only: appends fail with `StreamArchived`, and `load`/`readCategory`
   * leave it out unless asked (`includeArchived`); `readStream` and subscriptions still read
   * it. Archiving an archived stream changes nothing.
   */
  readonly archive: (streamId: string) => Effect.Effect<void, LifecycleError>
  /** Makes an archived stream live again (a live one is left as it is). */
  readonly unarchive: (streamId: string) => Effect.Effect<void, LifecycleError>
  /**
   * Deletes a stream for good: its events and snapshot are removed and a
   * {@link streamDeletedType} tombstone is appended at its version plus one, so subscriptions
   * deliver the deletion in order and the id cannot be reused (appends fail with
   * `StreamDeleted`). Deleting a deleted stream changes nothing. On PostgreSQL a big stream
   * goes in short transactions (marked deleted first, then its events 1,000 at a time, each
   * batch moving its first kept version past them as a truncation does, then the tombstone),
   * so it never holds every subscription back; a deletion interrupted half-way is finished by
   * the next call.
   */
  readonly deleteStream: (streamId: string) => Effect.Effect<void, LifecycleError>
  /**
   * Removes a stream's events below version `before` for good, in short transactions of at
   * most `Retention.chunkSize` events. Its stored snapshot becomes its base: `before` may not
   * pass the version of its snapshot of `options.snapshotVersion` (else `SnapshotRequired`, and
   * nothing changes; a snapshot of another version counts as none), nor its lowest dead letter
   * (`DeadLetterPending`), so `loadSnapshotted` still loads it; a plain `load` then fails with
   * `StreamTruncated`. Truncating no further than before changes nothing.
   */
  readonly truncate: (streamId: string, before: number, options: TruncateOptions) => Effect.Effect<Truncated, TruncateError>
  /** A stream's {@link Retention.Extent}, read without locking (`None`: no such stream). */
  readonly streamExtent: (streamId: string) => Effect.Effect<Option.Option<Retention.Extent>, InvalidInput | StoreError>
  /**
   * Writes a snapshot of an aggregate's current state now (loaded with `loadSnapshotted`),
   * whatever its snapshot policy says, so it can be truncated up to its current version.
   * Returns the version snapshotted (`None`: no such stream). An aggregate without a snapshot
   * definition, or a state its snapshot Schema refuses, is `InvalidInput`.
   */
  readonly snapshot: <S, E>(
    aggregate: Aggregate.Aggregate<S, E>,
    id: string
  ) => Effect.Effect<Option.Option<number>, LoadError>
  /** The ids of a category's streams (live and archived; deleted ones left out), in id order. */
  readonly streamIds: (category: string) => Stream.Stream<string, InvalidInput | StoreError>
  /**
   * Applies a retention policy to one stream (see {@link Retention.decide}), in short
   * transactions: never past its newest snapshot of `options.snapshotVersion` (nothing without
   * one) nor past its lowest dead letter.
   */
  readonly retain: (
    streamId: string,
    policy: Retention.Policy,
    options: RetentionOptions
  ) => Effect.Effect<Retention.Outcome, InvalidInput | StoreError>
  /**
   * Applies a retention policy to every stream of a category, in short transactions (one
   * stream, at most `Retention.chunkSize` events each; no long transaction), and reports what
   * it did.
   */
  readonly applyRetention: (
    category: string,
    policy: Retention.Policy,
    options: RetentionOptions
  ) => Effect.Effect<Retention.Report, InvalidInput | StoreError>
}

/**
 * The `EventStore` tag.
 *
 * @since 0.1.0
 * @category tags
 */
export const EventStore: Context.Tag<EventStore, EventStore> = Context.GenericTag<EventStore>("@mire/core/EventStore")

const positiveInt = (field: string, value: number | undefined): Effect.Effect<void, InvalidInput> =>
  value === undefined || (Number.isSafeInteger(value) && value > 0)
    ? Effect.void
    : Effect.fail(new InvalidInput({ field, reason: `${value} is not a positive integer` }))

const nonNegativeInt = (field: string, value: number | undefined): Effect.Effect<void, InvalidInput> =>
  value === undefined || (Number.isSafeInteger(value) && value >= 0)
    ? Effect.void
    : Effect.fail(new InvalidInput({ field, reason: `${value} is not a non-negative integer` }))

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

const metadataKeys: ReadonlySet<string> = new Set(["correlationId", "causationId", "custom"])

/** The first problem of an event's metadata (beyond being JSON), or `undefined`. */
const metadataFault = (metadata: { readonly [key: string]: unknown }): InvalidInput | undefined => {
  for (const key in metadata) {
    if (!metadataKeys.has(key)) return new InvalidInput({ field: `metadata.${key}`, reason: "is not a metadata field (use custom)" })
  }
  for (const key of ["correlationId", "causationId"] as const) {
    const value = metadata[key]
    if (value !== undefined && typeof value !== "string") {
      return new InvalidInput({ field: `metadata.${key}`, reason: "must be a string" })
    }
  }
  if (metadata.custom !== undefined && !Json.isPlainObject(metadata.custom)) {
    return new InvalidInput({ field: "metadata.custom", reason: "must be a JSON object" })
  }
  return undefined
}

/** `events[3].data`: built only for a problem (a string per event is garbage on the hot path). */
const eventField = (index: number, name: string): string => `events[${index}].${name}`

/** The problem of an event type, or `undefined`. */
const eventTypeFault = (eventType: unknown): string | undefined => {
  if (typeof eventType !== "string" || eventType.length === 0 || eventType.length > 255) return "must be 1-255 characters"
  const fault = Json.stringFault(eventType)
  if (fault !== undefined) return fault
  if (eventType.charCodeAt(0) === 36) return "types starting with $ are reserved for mire's system events"
  return undefined
}

/**
 * Validates one event: the first problem, or the storable event (a plain loop: appends are hot).
 * `checkedType` is an event type already found valid (events of a batch mostly share theirs).
 */
const validateEvent = (
  options: Options,
  event: NewEvent,
  index: number,
  now: number,
  checkedType: string | undefined
): StorableEvent | InvalidInput => {
  if (event.eventType !== checkedType) {
    const typeFault = eventTypeFault(event.eventType)
    if (typeFault !== undefined) return new InvalidInput({ field: eventField(index, "eventType"), reason: typeFault })
  }
  if (!Number.isSafeInteger(event.schemaVersion) || event.schemaVersion < 1) {
    return new InvalidInput({
      field: eventField(index, "schemaVersion"),
      reason: `${event.schemaVersion} is not a positive integer`
    })
  }
  if (!Json.isPlainObject(event.data)) {
    return new InvalidInput({ field: eventField(index, "data"), reason: "must be a JSON object" })
  }
  if (event.eventId !== undefined && (typeof event.eventId !== "string" || !uuidPattern.test(event.eventId))) {
    return new InvalidInput({ field: eventField(index, "eventId"), reason: "must be a UUID" })
  }
  const metadata = event.metadata ?? {}
  if (!Json.isPlainObject(metadata)) {
    return new InvalidInput({ field: eventField(index, "metadata"), reason: "must be a JSON object" })
  }
  const dataJson = Json.encode(event.data, options.maxDepth, options.maxEventSize)
  if (dataJson instanceof Json.JsonFault) {
    return new InvalidInput({ field: dataJson.path(eventField(index, "data")), reason: dataJson.reason })
  }
  // No metadata (the common case) is `{}`: nothing to walk.
  const metadataJson =
    event.metadata === undefined && dataJson.length + 2 <= options.maxEventSize
      ? "{}"
      : Json.encode(metadata, options.maxDepth, options.maxEventSize, dataJson.length)
  if (metadataJson instanceof Json.JsonFault) {
    return new InvalidInput({ field: metadataJson.path(eventField(index, "metadata")), reason: metadataJson.reason })
  }
  const shape = event.metadata === undefined ? undefined : metadataFault(metadata)
  if (shape !== undefined) return new InvalidInput({ field: eventField(index, shape.field), reason: shape.reason })
  return {
    eventId: event.eventId === undefined ? Uuid.v7(now) : event.eventId.toLowerCase(),
    eventType: event.eventType,
    schemaVersion: event.schemaVersion,
    data: event.data,
    metadata,
    dataJson,
    metadataJson,
    eventIdGiven: event.eventId !== undefined
  }
}

/**
 * Validates one request: the first problem, or the storable request with its
 * ids branded. `ids` collects the batch's event ids of the caller's choosing.
 */
const validateRequest = (
  options: Options,
  ids: Set<string>,
  request: AppendRequest,
  now: number
): StorableAppend | InvalidInput => {
  const streamId = StreamId.parse(request.streamId)
  if (streamId instanceof InvalidInput) return streamId
  const category = StreamId.parseCategory(request.category)
  if (category instanceof InvalidInput) return category
  const fault = ExpectedVersion.invalid(request.expected)
  if (fault !== undefined) return fault
  if (!Array.isArray(request.events) || request.events.length === 0) {
    return new InvalidInput({ field: "events", reason: "an append needs at least one event" })
  }
  const events: Array<StorableEvent> = []
  let checkedType: string | undefined
  for (let i = 0; i < request.events.length; i++) {
    const event = validateEvent(options, request.events[i]!, i, now, checkedType)
    if (event instanceof InvalidInput) return event
    checkedType = event.eventType
    // Only a caller's ids can repeat: a generated id has 74 random bits of its own (and the
    // store's unique event id would refuse a repeat anyway).
    if (event.eventIdGiven) {
      if (ids.has(event.eventId)) {
        return new InvalidInput({
          field: `events[${i}].eventId`,
          reason: `event id ${event.eventId} appears twice in this append`
        })
      }
      ids.add(event.eventId)
    }
    events.push(event)
  }
  return { streamId, category, expected: request.expected, events }
}

/** Validates a batch: the first problem, or the storable requests (each stream at most once). */
const validateBatch = (
  options: Options,
  requests: ReadonlyArray<AppendRequest>,
  now: number
): ReadonlyArray<StorableAppend> | InvalidInput => {
  const ids = new Set<string>()
  const streams = new Set<string>()
  const validated: Array<StorableAppend> = []
  for (const request of requests) {
    const storable = validateRequest(options, ids, request, now)
    if (storable instanceof InvalidInput) return storable
    if (streams.has(storable.streamId)) {
      return new InvalidInput({ field: "requests", reason: "each stream may appear once per batch" })
    }
    streams.add(storable.streamId)
    validated.push(storable)
  }
  return validated
}

/**
 * Rows a load reads per statement. A fold needs every event anyway, and a
 * round trip costs more than the rows' memory (a few MB for 10,000 typical
 * events): most streams load in one statement; a longer one should snapshot.
 */
const loadPageSize = 10_000

/**
 * Pages of a log read when the caller gives no `pageSize`: they start small
 * (a log read is often stopped early) and double up to {@link loadPageSize},
 * so a long read costs few round trips.
 */
const logPageSizes = { first: 1000, max: loadPageSize } as const

/**
 * Pages of a stream read when the caller gives no `pageSize`: a stream is
 * usually read whole, like a load, so the first page fits most streams.
 */
const streamPageSizes = { first: loadPageSize, max: loadPageSize } as const

/** Where a paged read is: the next page's cursor, the events still wanted and the next page's size. */
interface PageState<C> {
  readonly cursor: C
  readonly remaining: number
  readonly size: number
}

/** How a paged read fetches a page (and whether it is known to be the last) and steps past it. */
interface Pager<C> {
  readonly start: C
  readonly limit: number | undefined
  readonly pageSize: number | undefined
  readonly defaults: { readonly first: number; readonly max: number }
  readonly fetch: (cursor: C, size: number) => Effect.Effect<readonly [ReadonlyArray<RecordedEvent>, boolean], StoreError>
  readonly next: (last: RecordedEvent) => C
}

const firstPage = <C>(pager: Pager<C>): PageState<C> => ({
  cursor: pager.start,
  remaining: pager.limit ?? Number.POSITIVE_INFINITY,
  size: pager.pageSize ?? pager.defaults.first
})

/** The page after `rows` (fetched at `state`, asking for `size`), or `undefined` when the read is done. */
const nextPage = <C>(
  pager: Pager<C>,
  state: PageState<C>,
  size: number,
  rows: ReadonlyArray<RecordedEvent>,
  end: boolean
): PageState<C> | undefined => {
  const last = rows[rows.length - 1]
  const remaining = state.remaining - rows.length
  return last === undefined || rows.length < size || remaining <= 0 || end
    ? undefined
    : { cursor: pager.next(last), remaining, size: pager.pageSize ?? Math.min(state.size * 2, pager.defaults.max) }
}

/**
 * A paged read as a `Stream`, one chunk per page, then one empty chunk: a stream's run keeps the
 * chunk it emitted last in its executor until it emits another, and the executor, made before the
 * read's statement, is old by the time the rows arrive, so a last page kept by it was promoted to
 * the old generation (measured on a 10,000-event read through `Stream.runDrain`: 4.2 MB promoted per
 * scavenge with the page emitted last, 0.04 MB with the empty chunk after it; the read's median
 * 65 against 47 ms).
 */
const paged = <C>(pager: Pager<C>): Stream.Stream<RecordedEvent, StoreError> => {
  const first: PageState<C> | undefined = firstPage(pager)
  return Stream.paginateChunkEffect(
    first,
    (state): Effect.Effect<readonly [Chunk.Chunk<RecordedEvent>, Option.Option<PageState<C> | undefined>], StoreError> => {
      if (state === undefined) return Effect.succeed([Chunk.empty(), Option.none()] as const)
      const size = Math.min(state.size, state.remaining)
      return Effect.map(pager.fetch(state.cursor, size), ([rows, end]) =>
        [Chunk.unsafeFromArray(rows), Option.some(nextPage(pager, state, size, rows, end))] as const
      )
    }
  )
}

/** A paged read into one array, page by page in one fiber (no `Stream` keeps a page). */
const collected = <C>(pager: Pager<C>): Effect.Effect<ReadonlyArray<RecordedEvent>, StoreError> => {
  const loop = (
    state: PageState<C>,
    before: ReadonlyArray<ReadonlyArray<RecordedEvent>>
  ): Effect.Effect<ReadonlyArray<RecordedEvent>, StoreError> => {
    const size = Math.min(state.size, state.remaining)
    return Effect.flatMap(pager.fetch(state.cursor, size), ([rows, end]) => {
      const following = nextPage(pager, state, size, rows, end)
      if (following !== undefined) return loop(following, [...before, rows])
      return Effect.succeed(before.length === 0 ? rows : [...before, rows].flat())
    })
  }
  return Effect.suspend(() => loop(firstPage(pager), []))
}

// ---------------------------------------------------------------------------
// Appends
// ---------------------------------------------------------------------------

/**
 * The append part of the service. The hot path of every command: validation
 * is one synchronous pass (no Effect per check), and the span captures no
 * stack trace.
 */
const appends = (storage: Storage, limits: Options): Pick<EventStore, "append" | "appendMany"> => {
  const appendMany = (requests: ReadonlyArray<AppendRequest>): Effect.Effect<ReadonlyArray<CommittedEvents>, AppendError> =>
    Effect.clockWith((clock) => {
      if (requests.length === 0) return Effect.withSpan(Effect.succeed([]), "EventStore.appendMany", { captureStackTrace: false })
      const validated = validateBatch(limits, requests, clock.unsafeCurrentTimeMillis())
      if (validated instanceof InvalidInput) {
        return Effect.withSpan(Effect.fail(validated), "EventStore.appendMany", { captureStackTrace: false })
      }
      let eventCount = 0
      for (const request of validated) eventCount += request.events.length
      // Streams are locked in stream-id order, whatever order the caller gave, so two batches
      // touching the same streams cannot deadlock each other.
      const sorted =
        validated.length === 1
          ? validated
          : [...validated].sort((a, b) => (a.streamId < b.streamId ? -1 : a.streamId > b.streamId ? 1 : 0))
      // The span is made with its attributes, once the batch is known to be valid, and handed to
      // the store for its statements, not put in the context: nothing else under it reads it, and
      // putting it there cost an append 30% of its Effect operations (87 against 61 with 16
      // writers on Postgres, counted with a tracer's `context` hook).
      const traced = Effect.useSpan(
        "EventStore.appendMany",
        {
          captureStackTrace: false,
          attributes: {
            "mire.stream_count": validated.length,
            "mire.event_count": eventCount,
            "mire.stream_id":
              validated.length === 1
                ? validated[0]!.streamId
                : validated
                    .map((r) => r.streamId)
                    .join(",")
                    .slice(0, 1024)
          }
        },
        (span) =>
          Effect.zipRight(Metric.increment(Metrics.appends), storage.append(sorted, span)).pipe(
            Effect.tap(() => Metric.incrementBy(Metrics.eventsAppended, eventCount)),
            Effect.tapErrorTag("ConcurrencyConflict", () => Metric.increment(Metrics.conflicts))
          )
      )
      if (validated.length === 1) return traced
      return Effect.map(traced, (committed) => {
        const byStream = new Map(committed.map((c) => [c.streamId, c]))
        return validated.map((r) => byStream.get(r.streamId)!)
      })
    })

  return {
    appendMany,
    append: (streamId, category, expected, events) =>
      Effect.map(appendMany([{ streamId, category, expected, events }]), (committed) => committed[0]!)
  }
}

// ---------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------

/** How one stream is read page by page, once its id and options are checked. */
const streamPager = (
  storage: Storage,
  streamId: string,
  options: ReadStreamOptions = {}
): Effect.Effect<Pager<number>, InvalidInput> => {
  const direction = options.direction ?? "forward"
  const step = direction === "forward" ? 1 : -1
  return Effect.map(
    Effect.all([
      StreamId.validate(streamId),
      nonNegativeInt("from", options.from),
      positiveInt("limit", options.limit),
      positiveInt("pageSize", options.pageSize)
    ]),
    ([id]) => ({
      start: options.from ?? (direction === "forward" ? 1 : Number.MAX_SAFE_INTEGER),
      limit: options.limit,
      pageSize: options.pageSize,
      defaults: streamPageSizes,
      // Forward, each page also tells the stream's version: a read ends at it, without asking for an empty page.
      fetch:
        direction === "forward"
          ? (cursor, size) =>
              Effect.map(
                storage.loadPage(id, cursor, size),
                (page) => [page.events, (page.events[page.events.length - 1]?.streamVersion ?? 0) >= page.version] as const
              )
          : (cursor, size) => Effect.map(storage.readStreamPage(id, cursor, direction, size), (events) => [events, false] as const),
      next: (last) => last.streamVersion + step
    })
  )
}

/** Events by global position (of some categories, or all) as a paged stream, after the options are checked. */
const pagedLog = (
  storage: Storage,
  categories: ReadonlyArray<string> | undefined,
  options: ReadLogOptions = {}
): Stream.Stream<RecordedEvent, InvalidInput | StoreError> => {
  const direction = options.direction ?? "forward"
  const validate = Effect.all([
    Effect.forEach(categories ?? [], StreamId.validateCategory),
    options.from === undefined || (typeof options.from === "bigint" && options.from >= 0n)
      ? Effect.void
      : Effect.fail(new InvalidInput({ field: "from", reason: "must be a non-negative bigint" })),
    positiveInt("limit", options.limit),
    positiveInt("pageSize", options.pageSize)
  ])
  const from = options.from ?? (direction === "forward" ? 0n : 9223372036854775807n)
  const step = direction === "forward" ? 1n : -1n
  return Stream.unwrap(
    Effect.map(validate, ([checked]) => {
      const wanted = categories === undefined ? undefined : checked
      return paged({
        start: from,
        limit: options.limit,
        pageSize: options.pageSize,
        defaults: logPageSizes,
        fetch: (cursor, size) =>
          Effect.map(
            storage.readLogPage(wanted, cursor, direction, size, wanted !== undefined && options.includeArchived !== true),
            (events) => [events, false] as const
          ),
        next: (last) => last.globalPosition + step
      })
    })
  ).pipe(Stream.withSpan("EventStore.readLog", { attributes: { "mire.categories": categories?.join(",") ?? "*" } }))
}

/** The read part of the service: streams, categories, the whole log and a stream's version. */
const reads = (storage: Storage): Pick<EventStore, "readStream" | "readStreamEvents" | "readCategory" | "readAll" | "streamVersion"> => ({
  readStream: (streamId, options) =>
    Stream.unwrap(Effect.map(streamPager(storage, streamId, options), paged)).pipe(
      Stream.withSpan("EventStore.readStream", { attributes: { "mire.stream_id": streamId } })
    ),
  readStreamEvents: (streamId, options) =>
    countedSpan(
      "EventStore.readStreamEvents",
      { attributes: { "mire.stream_id": streamId } },
      Effect.flatMap(streamPager(storage, streamId, options), collected),
      (span, events) => span.attribute("mire.event_count", events.length)
    ),
  readCategory: (category, options) => pagedLog(storage, [category], options),
  readAll: (options) => pagedLog(storage, undefined, options),
  streamVersion: (streamId) =>
    Effect.flatMap(StreamId.validate(streamId), storage.streamVersion).pipe(
      Effect.withSpan("EventStore.streamVersion", { attributes: { "mire.stream_id": streamId } })
    )
})

// ---------------------------------------------------------------------------
// Loads: reading a stream forward and folding it
// ---------------------------------------------------------------------------

/** How a load reads a page: only the fold's columns when the store can, whole events otherwise. */
type FoldReader = (streamId: StreamId.StreamId, from: number, limit: number) => Effect.Effect<FoldPage, StoreError>

/** A load's page reads, their statements children of the load's span. */
const foldReader =
  (storage: Storage, span: Tracer.AnySpan): FoldReader =>
  (streamId, from, limit) =>
    storage.loadFoldPage === undefined ? storage.loadPage(streamId, from, limit, span) : storage.loadFoldPage(streamId, from, limit, span)

/**
 * Folds a stream from `start`, given its first page (read from `start.version + 1`): a plain
 * loop, one synchronous decode and apply per event, pages until the version the first read saw.
 */
const replay = <S, E>(
  read: FoldReader,
  aggregate: Aggregate.Aggregate<S, E>,
  streamId: StreamId.StreamId,
  start: Aggregate.Folded<S>,
  first: FoldPage,
  firstFull = first.events.length >= loadPageSize
): Effect.Effect<Aggregate.Folded<S>, LoadError> => {
  // Most loads are one page: fold it without entering a generator.
  const folded = Aggregate.foldRecorded(aggregate, start, first.events)
  if (Either.isLeft(folded)) return Effect.fail(folded.left)
  return firstFull && folded.right.version < first.version
    ? replayRest(read, aggregate, streamId, folded.right, first.version)
    : Effect.succeed(folded.right)
}

/** The pages after a full first one, up to the version the first read saw. */
const replayRest = <S, E>(
  read: FoldReader,
  aggregate: Aggregate.Aggregate<S, E>,
  streamId: StreamId.StreamId,
  start: Aggregate.Folded<S>,
  version: number
): Effect.Effect<Aggregate.Folded<S>, LoadError> =>
  Effect.gen(function* () {
    let folded = start
    let full = true
    while (full && folded.version < version) {
      const page = yield* read(streamId, folded.version + 1, loadPageSize)
      folded = yield* Aggregate.foldRecorded(aggregate, folded, page.events)
      full = page.events.length >= loadPageSize
    }
    return folded
  })

/**
 * The span of a load, handed to `f` rather than put in the context: the load's statements name
 * it as their parent (see `Storage.loadPage`) and its attributes are set on it. When `f`
 * succeeds, its duration by the `Clock` goes to `Metrics.loadDuration`, with the fiber's metric
 * labels as `Metric.update` would take them. The clock is read and the span made in one step:
 * every command loads, and on a 1-event load each Effect operation mire adds is measurable
 * (bench/README.md). The stack trace is the enclosing operation's; capturing one per load costs.
 */
const loadSpan = <A, E>(name: string, streamId: string, f: (span: Tracer.Span) => Effect.Effect<A, E>): Effect.Effect<A, E> =>
  Effect.withFiberRuntime((fiber) => {
    const clock = Context.get(fiber.currentDefaultServices, Clock.Clock)
    const start = clock.unsafeCurrentTimeNanos()
    return Effect.useSpan(name, { attributes: { "mire.stream_id": streamId }, captureStackTrace: false }, (span) =>
      Effect.map(f(span), (a) => {
        const millis = Number(clock.unsafeCurrentTimeNanos() - start) / 1_000_000
        Metrics.loadDuration.unsafeUpdate(millis, fiber.getFiberRef(FiberRef.currentMetricLabels))
        return a
      })
    )
  })

/** Is a page's stream left out of a load: deleted, or archived unless the load asks for it? */
const hidden = (page: FoldPage, options: LoadOptions | undefined): boolean =>
  page.state === "deleted" || (page.state === "archived" && options?.includeArchived !== true)

/** Folds a whole stream from version 1 (version 0, nothing folded, when the load leaves it out). */
const replayAll = <S, E>(
  storage: Storage,
  aggregate: Aggregate.Aggregate<S, E>,
  streamId: StreamId.StreamId,
  span: Tracer.Span,
  options?: LoadOptions
) => {
  const read = foldReader(storage, span)
  return Effect.flatMap(read(streamId, 1, loadPageSize), (page) =>
    hidden(page, options)
      ? Effect.succeed<Aggregate.Folded<S>>({ state: aggregate.initial, version: 0 })
      : replay(read, aggregate, streamId, { state: aggregate.initial, version: 0 }, page)
  )
}

/** The root of a fold: `None` when the stream has no events. */
const rootOf = <S, E>(aggregate: Aggregate.Aggregate<S, E>, id: string, folded: Aggregate.Folded<S>) =>
  folded.version === 0 ? Option.none() : Option.some(AggregateRoot.make(aggregate, id, folded.state, folded.version))

/** The load part of the service: a fold of the whole stream, with or without a row lock. */
const loads = (storage: Storage): Pick<EventStore, "load" | "loadOrDefault" | "loadForUpdate"> => {
  // Not `Effect.fn`: every command loads, and a generator plus a call-site stack per load cost
  // more than the rest of mire's part of a short load. The span is the same.
  const load = <S, E>(
    aggregate: Aggregate.Aggregate<S, E>,
    id: string,
    options?: LoadOptions
  ): Effect.Effect<Option.Option<AggregateRoot.AggregateRoot<S, E>>, LoadError> => {
    // Checked in place, without an Effect per check: every load does it.
    const streamId = StreamId.parseAggregate(aggregate.category, id)
    if (streamId instanceof InvalidInput) return Effect.withSpan(streamId, "EventStore.load", { captureStackTrace: false })
    return loadSpan("EventStore.load", streamId, (span) =>
      Effect.map(replayAll(storage, aggregate, streamId, span, options), (folded) => {
        span.attribute("mire.version", folded.version)
        return rootOf(aggregate, id, folded)
      })
    )
  }

  const loadOrDefault = <S, E>(aggregate: Aggregate.Aggregate<S, E>, id: string, options?: LoadOptions) =>
    Effect.map(load(aggregate, id, options), Option.getOrElse(() => AggregateRoot.make(aggregate, id)))

  const loadForUpdate = Effect.fn("EventStore.loadForUpdate")(function* <S, E>(
    aggregate: Aggregate.Aggregate<S, E>,
    id: string,
    options?: LoadOptions
  ) {
    const streamId = yield* StreamId.forAggregate(aggregate.category, id)
    yield* Effect.annotateCurrentSpan("mire.stream_id", streamId)
    if (!(yield* storage.inTransaction)) {
      return yield* new InvalidInput({
        field: "loadForUpdate",
        reason: "must run inside EventStore.transaction (a lock outside a transaction ends at once)"
      })
    }
    yield* storage.lockStream(streamId)
    return yield* load(aggregate, id, options)
  })

  return { load, loadOrDefault, loadForUpdate }
}

// ---------------------------------------------------------------------------
// Saves: a root's pending events as an append
// ---------------------------------------------------------------------------

const encodePending = <S, E>(root: AggregateRoot.AggregateRoot<S, E>) =>
  Effect.map(root.aggregate.codec.encodeAll(root.pending), (events) =>
    events.map((encoded): NewEvent => ({ ...encoded, metadata: root.metadata }))
  )

/** The append that saves a root: its pending events, expecting the version it was loaded at. */
const requestOf = <S, E>(root: AggregateRoot.AggregateRoot<S, E>) =>
  Effect.map(
    encodePending(root),
    (events): AppendRequest => ({
      streamId: root.streamId,
      category: root.aggregate.category,
      expected: ExpectedVersion.Exact(root.version),
      events
    })
  )

/** The root once its pending events are stored. */
const saved = <S, E>(root: AggregateRoot.AggregateRoot<S, E>): AggregateRoot.AggregateRoot<S, E> => ({
  ...root,
  version: AggregateRoot.nextVersion(root),
  pending: []
})

/** The save part of the service, over the append part. */
const saves = (appendMany: EventStore["appendMany"]): Pick<EventStore, "save" | "saveMany"> => {
  const save = Effect.fn("EventStore.save")(function* <S, E>(root: AggregateRoot.AggregateRoot<S, E>) {
    yield* Effect.annotateCurrentSpan({ "mire.stream_id": root.streamId, "mire.event_count": root.pending.length })
    if (root.pending.length === 0) return root
    yield* StreamId.forAggregate(root.aggregate.category, root.id)
    const request = yield* requestOf(root)
    yield* appendMany([request])
    return saved(root)
  })

  const saveAll = Effect.fn("EventStore.saveMany")(function* (roots: ReadonlyArray<AnyRoot>) {
    const dirty = roots.filter((root) => root.pending.length > 0)
    yield* Effect.annotateCurrentSpan({
      "mire.stream_count": dirty.length,
      "mire.event_count": dirty.reduce((n, root) => n + root.pending.length, 0)
    })
    yield* Effect.forEach(dirty, (root) => StreamId.forAggregate(root.aggregate.category, root.id))
    const requests = yield* Effect.forEach(dirty, requestOf)
    yield* appendMany(requests)
    return roots.map((root) => (root.pending.length > 0 ? saved(root) : root))
  })

  // TypeScript cannot follow a tuple's element types through `map`; this overload states what
  // the implementation keeps: position by position, each root comes back as a root of the same
  // aggregate (`saved` preserves the type of the root it is given).
  function saveMany<const Roots extends ReadonlyArray<AnyRoot>>(roots: Roots): Effect.Effect<Roots, AppendError>
  function saveMany(roots: ReadonlyArray<AnyRoot>): Effect.Effect<ReadonlyArray<AnyRoot>, AppendError> {
    return saveAll(roots)
  }

  return { save, saveMany }
}

// ---------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------

/**
 * The fold of a snapshot page: from the snapshot when it is valid (`hit`), from the start
 * when there is none; `None` after logging why a stored snapshot must be ignored.
 */
const fromSnapshot = <S, E>(
  read: FoldReader,
  aggregate: Aggregate.Aggregate<S, E>,
  definition: Aggregate.SnapshotDefinition<S>,
  streamId: StreamId.StreamId,
  page: SnapshotLoadPage
): Effect.Effect<{ readonly result: Option.Option<Aggregate.Folded<S>>; readonly hit: boolean }, LoadError> => {
  if (Option.isNone(page.snapshot)) {
    return Effect.map(replay(read, aggregate, streamId, { state: aggregate.initial, version: 0 }, page), (folded) => ({
      result: Option.some(folded),
      hit: false
    }))
  }
  const snapshot = page.snapshot.value
  type Outcome = { readonly result: Option.Option<Aggregate.Folded<S>>; readonly hit: boolean }
  const invalid = (rejection: Snapshot.Rejection, detail: string): Effect.Effect<Outcome> =>
    Effect.logWarning(`ignoring snapshot of ${streamId}: ${rejection} (${detail}); replaying in full`).pipe(
      Effect.zipRight(Metric.increment(Metric.tagged(Metrics.snapshotInvalidations, "reason", rejection))),
      Effect.as({ result: Option.none(), hit: false })
    )
  return Effect.flatMap(Effect.either(Snapshot.decode(definition, snapshot)), (decoded): Effect.Effect<Outcome, LoadError> => {
    if (decoded._tag === "Left") return invalid(decoded.left.rejection, decoded.left.detail)
    // The event at the snapshot's version must exist, or the snapshot claims a version the stream doesn't have.
    const anchor = page.events[0]
    if (anchor === undefined || anchor.streamVersion !== snapshot.streamVersion) {
      return invalid("beyond-stream", `snapshot at v${snapshot.streamVersion}`)
    }
    return Effect.map(
      replay(
        read,
        aggregate,
        streamId,
        { state: decoded.right, version: snapshot.streamVersion },
        { version: page.version, events: page.events.slice(1) },
        page.events.length >= loadPageSize
      ),
      (folded) => ({ result: Option.some(folded), hit: true })
    )
  })
}

/**
 * The snapshot part of the service: loads that start from a stored snapshot
 * (falling back to a full load) and saves that write one when it is due.
 */
const snapshots = (
  storage: Storage,
  limits: Options,
  loaded: Pick<EventStore, "load">,
  saving: Pick<EventStore, "save">
): Pick<EventStore, "loadSnapshotted" | "saveSnapshotting"> => {
  // Not `Effect.fn`, for the reason `load` gives.
  const loadSnapshotted = <S, E>(
    aggregate: Aggregate.Aggregate<S, E>,
    id: string,
    options?: LoadOptions
  ): Effect.Effect<Option.Option<AggregateRoot.AggregateRoot<S, E>>, LoadError> => {
    const streamId = StreamId.parseAggregate(aggregate.category, id)
    if (streamId instanceof InvalidInput) return Effect.withSpan(streamId, "EventStore.loadSnapshotted", { captureStackTrace: false })
    if (Option.isNone(aggregate.snapshot)) {
      return Effect.withSpan(loaded.load(aggregate, id, options), "EventStore.loadSnapshotted", {
        attributes: { "mire.stream_id": streamId },
        captureStackTrace: false
      })
    }
    const definition = aggregate.snapshot.value
    return loadSpan("EventStore.loadSnapshotted", streamId, (span) => {
      // A full load, when the snapshot cannot be used, is a child of this one.
      const full = Effect.withParentSpan(loaded.load(aggregate, id, options), span)
      // One statement: the snapshot and the events from its version (from 1 without a snapshot).
      return Effect.flatMap(storage.loadSnapshotPage(streamId, loadPageSize, span), (page) =>
        hidden(page, options)
          ? Effect.succeed({ result: Option.some<Aggregate.Folded<S>>({ state: aggregate.initial, version: 0 }), hit: false })
          : fromSnapshot(foldReader(storage, span), aggregate, definition, streamId, page)
      ).pipe(
        Effect.flatMap(({ result, hit }) => {
          if (Option.isNone(result)) return full
          const root = Effect.succeed(rootOf(aggregate, id, result.value))
          return result.value.version > 0 ? Effect.zipRight(Metric.increment(hit ? Metrics.snapshotHits : Metrics.snapshotMisses), root) : root
        })
      )
    })
  }

  const saveSnapshotting = Effect.fn("EventStore.saveSnapshotting")(function* <S, E>(
    root: AggregateRoot.AggregateRoot<S, E>
  ) {
    const next = yield* saving.save(root)
    const definition = root.aggregate.snapshot
    if (Option.isSome(definition) && Snapshot.isDue(definition.value, root.version, next.version)) {
      // A snapshot is a cache: writing it after the save keeps the append short, and a failed
      // snapshot write must not fail a save that already committed.
      yield* Snapshot.encode(definition.value, next.streamId, next.version, next.state).pipe(
        Effect.flatMap(
          Option.match({
            onNone: () => Effect.logWarning(`state of ${next.streamId} fails its snapshot Schema; no snapshot`),
            onSome: (snapshot) => {
              const stateJson = Json.encode(snapshot.state, limits.maxDepth, limits.maxEventSize)
              return stateJson instanceof Json.JsonFault
                ? Effect.logWarning(
                    `snapshot state of ${next.streamId} is not storable JSON (${stateJson.path("state")}: ${stateJson.reason}); no snapshot`
                  )
                : Effect.zipRight(storage.writeSnapshot({ ...snapshot, stateJson }), Metric.increment(Metrics.snapshotWrites))
            }
          })
        ),
        Effect.catchAll((error) => Effect.logWarning(`snapshot write for ${next.streamId} failed`, error))
      )
    }
    return next
  })

  return { loadSnapshotted, saveSnapshotting }
}

// ---------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Lifecycle: archive, unarchive, delete
// ---------------------------------------------------------------------------

/** The lifecycle part of the service: a stream's archived mark, and its deletion with a tombstone. */
const lifecycle = (storage: Storage): Pick<EventStore, "archive" | "unarchive" | "deleteStream"> => {
  const setArchived = (name: string, archived: boolean) => (streamId: string) =>
    Effect.flatMap(StreamId.validate(streamId), (id) => storage.setArchived(id, archived)).pipe(
      Effect.withSpan(name, { attributes: { "mire.stream_id": streamId } })
    )
  const deleteStream = (streamId: string) =>
    Effect.flatMap(StreamId.validate(streamId), (id) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        // The tombstone's data is filled in by the store (the version it deletes is read under its lock).
        const tombstone: StorableEvent = {
          eventId: Uuid.v7(now),
          eventType: streamDeletedType,
          schemaVersion: 1,
          data: {},
          metadata: {},
          dataJson: "{}",
          metadataJson: "{}",
          eventIdGiven: false
        }
        return Effect.asVoid(storage.deleteStream(id, tombstone))
      })
    ).pipe(Effect.withSpan("EventStore.deleteStream", { attributes: { "mire.stream_id": streamId } }))
  return {
    archive: setArchived("EventStore.archive", true),
    unarchive: setArchived("EventStore.unarchive", false),
    deleteStream
  }
}

// ---------------------------------------------------------------------------
// Truncation and retention
// ---------------------------------------------------------------------------

/** Stream ids of a category read per statement by `streamIds` (and so by retention). */
const streamIdsPageSize = 1000

/**
 * A fold that found a version missing: `StreamTruncated` when the stream is now truncated
 * past it (its extent says so: a fold from version 1, or a paged load that a truncation
 * overtook between two pages), the `StreamCorrupt` it was otherwise. Only this failure path
 * reads anything more: a load that succeeds costs nothing extra.
 */
const truncationChecked = <A>(storage: Storage, effect: Effect.Effect<A, LoadError>): Effect.Effect<A, LoadError> =>
  Effect.catchTag(effect, "StreamCorrupt", (error): Effect.Effect<never, LoadError> =>
    Effect.flatMap(
      storage.streamExtent(StreamId.fromStored(error.streamId), { lock: false }),
      (extent): Effect.Effect<never, LoadError> =>
        Option.isSome(extent) && !extent.value.deleted && extent.value.truncatedBefore > error.expectedVersion
          ? Effect.fail(new StreamTruncated({ streamId: error.streamId, truncatedBefore: extent.value.truncatedBefore }))
          : Effect.fail(error)
    )
  )

/** The loads of the service, each failing with `StreamTruncated` rather than `StreamCorrupt` for a truncated stream. */
const truncationAware = (
  storage: Storage,
  loading: Pick<EventStore, "load" | "loadOrDefault" | "loadForUpdate" | "loadSnapshotted">
): Pick<EventStore, "load" | "loadOrDefault" | "loadForUpdate" | "loadSnapshotted"> => ({
  load: (aggregate, id, options) => truncationChecked(storage, loading.load(aggregate, id, options)),
  loadOrDefault: (aggregate, id, options) => truncationChecked(storage, loading.loadOrDefault(aggregate, id, options)),
  loadForUpdate: (aggregate, id, options) => truncationChecked(storage, loading.loadForUpdate(aggregate, id, options)),
  loadSnapshotted: (aggregate, id, options) => truncationChecked(storage, loading.loadSnapshotted(aggregate, id, options))
})

/** The truncation part of the service: explicit truncation, and retention policies over it. */
const truncations = (
  storage: Storage,
  limits: Options,
  loaded: Pick<EventStore, "loadSnapshotted">
): Pick<EventStore, "truncate" | "streamExtent" | "snapshot" | "streamIds" | "retain" | "applyRetention"> => {
  /**
   * One step of a truncation to `before`, in its own short transaction under the stream's
   * lock: the pure decision on what the row says now, then at most `Retention.chunkSize`
   * versions removed and the base raised to the step, in one statement. Returns the base
   * after it and how many events it removed.
   */
  const truncationStep = (id: StreamId.StreamId, before: number, expected: number) =>
    storage.transaction(
      Effect.gen(function* () {
        const extent = yield* storage.streamExtent(id, { lock: true })
        if (Option.isNone(extent)) return yield* new StreamNotFound({ streamId: id })
        const decided = Retention.truncation(id, extent.value, before, expected)
        if (Either.isLeft(decided)) return yield* decided.left
        if (Option.isNone(decided.right)) return { base: extent.value.truncatedBefore, removed: 0 }
        const step = Retention.nextStep(extent.value.truncatedBefore, decided.right.value)
        const removed = yield* storage.removeBefore(id, step)
        return { base: step, removed }
      })
    )

  /**
   * The steps after the first, up to `before`: each re-decides under the lock, so a change in
   * between (the stream deleted, its snapshot replaced, a dead letter recorded) stops the
   * truncation where it got to (every step is itself a valid truncation); a store failure fails.
   */
  const truncationRest = (id: StreamId.StreamId, before: number, expected: number, from: { base: number; removed: number }) =>
    Effect.gen(function* () {
      let { base, removed } = from
      while (base < before) {
        const step = yield* Effect.either(truncationStep(id, before, expected))
        if (Either.isLeft(step)) {
          if (step.left._tag === "StoreError") return yield* step.left
          break
        }
        if (step.right.base <= base) break
        base = step.right.base
        removed += step.right.removed
      }
      return { base, removed }
    })

  const truncate = (streamId: string, before: number, options: TruncateOptions) =>
    Effect.gen(function* () {
      const id = yield* StreamId.validate(streamId)
      yield* positiveInt("before", before)
      const expected = yield* Retention.expectedSnapshotVersion(options.snapshotVersion)
      if (options.dryRun === true) {
        // Decided on the extent as it is, without a lock or a transaction: nothing is touched.
        const extent = yield* storage.streamExtent(id, { lock: false })
        if (Option.isNone(extent)) return yield* new StreamNotFound({ streamId: id })
        const decided = Retention.truncation(id, extent.value, before, expected)
        if (Either.isLeft(decided)) return yield* decided.left
        const base = extent.value.truncatedBefore
        return Option.isNone(decided.right)
          ? { streamId: id, truncatedBefore: base, removed: 0 }
          : { streamId: id, truncatedBefore: decided.right.value, removed: decided.right.value - base }
      }
      // The first step's refusal is the answer (nothing changed); the rest go on from it.
      const first = yield* truncationStep(id, before, expected)
      const done = yield* truncationRest(id, before, expected, first)
      return { streamId: id, truncatedBefore: done.base, removed: done.removed }
    }).pipe(Effect.withSpan("EventStore.truncate", { attributes: { "mire.stream_id": streamId, "mire.before": before } }))

  const streamExtent = (streamId: string) =>
    Effect.flatMap(StreamId.validate(streamId), (id) => storage.streamExtent(id, { lock: false })).pipe(
      Effect.withSpan("EventStore.streamExtent", { attributes: { "mire.stream_id": streamId } })
    )

  const streamIds = (category: string): Stream.Stream<string, InvalidInput | StoreError> =>
    Stream.unwrap(
      Effect.map(StreamId.validateCategory(category), (checked) =>
        Stream.paginateChunkEffect(Option.none<StreamId.StreamId>(), (after) =>
          Effect.map(storage.streamIdsPage(checked, Option.getOrUndefined(after), streamIdsPageSize), (ids) => {
            const last = ids[ids.length - 1]
            return [
              Chunk.unsafeFromArray<string>(ids),
              last === undefined || ids.length < streamIdsPageSize ? Option.none() : Option.some(Option.some(last))
            ] as const
          })
        )
      )
    ).pipe(Stream.withSpan("EventStore.streamIds", { attributes: { "mire.category": category } }))

  /**
   * One stream under a checked policy: a dry run reads without locking; otherwise the decision
   * and its first step in one short transaction, then the rest of the cut a step at a time.
   */
  const retainChecked = (
    id: StreamId.StreamId,
    policy: Retention.CheckedPolicy,
    expected: number,
    cutoff: Date | undefined,
    dryRun: boolean
  ): Effect.Effect<Retention.Outcome, StoreError> =>
    dryRun
      ? Effect.map(storage.streamExtent(id, { lock: false, cutoff }), (extent): Retention.Outcome => {
          const decision = Option.isNone(extent) ? ({ _tag: "Keep" } as const) : Retention.decide(policy, extent.value, expected)
          const removed =
            decision._tag === "Truncate" && Option.isSome(extent) ? decision.before - extent.value.truncatedBefore : 0
          return { streamId: id, decision, removed }
        })
      : Effect.gen(function* () {
          const first = yield* storage.transaction(
            Effect.gen(function* () {
              const extent = yield* storage.streamExtent(id, { lock: true, cutoff })
              const decision = Option.isNone(extent) ? ({ _tag: "Keep" } as const) : Retention.decide(policy, extent.value, expected)
              if (decision._tag !== "Truncate" || Option.isNone(extent)) return { decision, base: 0, removed: 0 }
              const step = Retention.nextStep(extent.value.truncatedBefore, decision.before)
              return { decision, base: step, removed: yield* storage.removeBefore(id, step) }
            })
          )
          if (first.decision._tag !== "Truncate") return { streamId: id, decision: first.decision, removed: 0 }
          const done = yield* truncationRest(id, first.decision.before, expected, first)
          return { streamId: id, decision: first.decision, removed: done.removed }
        })

  const checkedPolicy = (policy: Retention.Policy) =>
    Effect.flatMap(Either.match(Retention.validate(policy), { onLeft: Effect.fail, onRight: Effect.succeed }), (checked) =>
      Effect.map(Clock.currentTimeMillis, (now) => ({ checked, cutoff: Option.getOrUndefined(Retention.cutoff(checked, now)) }))
    )

  const retain = (streamId: string, policy: Retention.Policy, options: RetentionOptions) =>
    Effect.gen(function* () {
      const id = yield* StreamId.validate(streamId)
      const { checked, cutoff } = yield* checkedPolicy(policy)
      const expected = yield* Retention.expectedSnapshotVersion(options.snapshotVersion)
      return yield* retainChecked(id, checked, expected, cutoff, options.dryRun === true)
    }).pipe(Effect.withSpan("EventStore.retain", { attributes: { "mire.stream_id": streamId } }))

  const applyRetention = (category: string, policy: Retention.Policy, options: RetentionOptions) =>
    Effect.gen(function* () {
      const { checked, cutoff } = yield* checkedPolicy(policy)
      const expected = yield* Retention.expectedSnapshotVersion(options.snapshotVersion)
      const dryRun = options.dryRun === true
      return yield* streamIds(category).pipe(
        Stream.mapEffect((id) => retainChecked(StreamId.fromStored(id), checked, expected, cutoff, dryRun)),
        Stream.runFold(Retention.emptyReport(dryRun), Retention.record)
      )
    }).pipe(Effect.withSpan("EventStore.applyRetention", { attributes: { "mire.category": category } }))

  const snapshot = <S, E>(aggregate: Aggregate.Aggregate<S, E>, id: string) =>
    Effect.gen(function* () {
      if (Option.isNone(aggregate.snapshot)) {
        return yield* new InvalidInput({ field: "aggregate", reason: `${aggregate.category} has no snapshot definition` })
      }
      const definition = aggregate.snapshot.value
      const root = yield* truncationChecked(storage, loaded.loadSnapshotted(aggregate, id))
      if (Option.isNone(root)) return Option.none<number>()
      const { streamId, version, state } = root.value
      const encoded = yield* Snapshot.encode(definition, streamId, version, state)
      if (Option.isNone(encoded)) {
        return yield* new InvalidInput({ field: "state", reason: `the state of ${streamId} fails its snapshot Schema` })
      }
      const stateJson = Json.encode(encoded.value.state, limits.maxDepth, limits.maxEventSize)
      if (stateJson instanceof Json.JsonFault) {
        return yield* new InvalidInput({ field: stateJson.path("state"), reason: stateJson.reason })
      }
      yield* storage.writeSnapshot({ ...encoded.value, stateJson })
      yield* Metric.increment(Metrics.snapshotWrites)
      return Option.some(version)
    }).pipe(Effect.withSpan("EventStore.snapshot", { attributes: { "mire.category": aggregate.category, "mire.id": id } }))

  return { truncate, streamExtent, snapshot, streamIds, retain, applyRetention }
}

/** The transaction part of the service: the storage's own, traced. */
const transactions = (storage: Storage): Pick<EventStore, "transaction" | "currentTransactionId"> => ({
  transaction: (effect) => storage.transaction(effect).pipe(Effect.withSpan("EventStore.transaction")),
  currentTransactionId: storage.currentTransactionId.pipe(Effect.withSpan("EventStore.currentTransactionId"))
})

/**
 * Builds the full `EventStore` from a store's {@link Storage} primitives, in
 * named parts: appends, reads, loads, saves, snapshots and transactions.
 * Every event's `data` and `metadata` must be JSON that PostgreSQL stores
 * unchanged (plain objects and arrays, strings without NUL or lone
 * surrogates, finite numbers, booleans, null), within the {@link Options}
 * limits ({@link defaults} where not given); anything else is `InvalidInput`
 * naming its path, before any I/O.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (storage: Storage, options: Partial<Options> = {}): EventStore => {
  const limits: Options = { ...defaults, ...options }
  const appending = appends(storage, limits)
  const loading = loads(storage)
  const saving = saves(appending.appendMany)
  const snapshotting = snapshots(storage, limits, loading, saving)
  return {
    ...appending,
    ...reads(storage),
    ...loading,
    ...saving,
    ...snapshotting,
    ...transactions(storage),
    ...lifecycle(storage),
    ...truncations(storage, limits, snapshotting),
    // The loads again, last: a truncated stream fails with StreamTruncated, not StreamCorrupt.
    ...truncationAware(storage, { ...loading, ...snapshotting })
  }
}

/**
 * Appends encoded events to one stream.
 *
 * @example
 * ```ts
 * import { EventStore, ExpectedVersion } from "@mire/core"
 *
 * const append = EventStore.append("account-1", "account", ExpectedVersion.NoStream, [
 *   { eventType: "account.opened", schemaVersion: 1, data: { owner: "Ada" } }
 * ])
 * ```
 * @since 0.1.0
 * @category accessors
 */
export const append = (
  streamId: string,
  category: string,
  expected: ExpectedVersion.ExpectedVersion,
  events: ReadonlyArray<NewEvent>
): Effect.Effect<CommittedEvents, AppendError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.append(streamId, category, expected, events))

/**
 * @since 0.1.0
 * @category accessors
 */
export const appendMany = (
  requests: ReadonlyArray<AppendRequest>
): Effect.Effect<ReadonlyArray<CommittedEvents>, AppendError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.appendMany(requests))

/**
 * @since 0.1.0
 * @category accessors
 */
export const readStream = (
  streamId: string,
  options?: ReadStreamOptions
): Stream.Stream<RecordedEvent, InvalidInput | StoreError, EventStore> =>
  Stream.unwrap(Effect.map(EventStore, (store) => store.readStream(streamId, options)))

/**
 * A stream's events in one array: {@link readStream}'s events, with its
 * options and errors, read page by page without a `Stream`. For a stream
 * the caller wants in memory anyway; {@link readStream} for one to go
 * through an event at a time.
 *
 * @example
 * ```ts
 * import { EventStore } from "@mire/core"
 * import { Effect } from "effect"
 *
 * // The last 20 events of an account, newest first.
 * const recent = EventStore.readStreamEvents("account-42", { direction: "backward", limit: 20 }).pipe(
 *   Effect.map((events) => events.map((e) => `${e.streamVersion} ${e.eventType}`))
 * )
 * ```
 * @since 0.2.0
 * @category accessors
 */
export const readStreamEvents = (
  streamId: string,
  options?: ReadStreamOptions
): Effect.Effect<ReadonlyArray<RecordedEvent>, InvalidInput | StoreError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.readStreamEvents(streamId, options))

/**
 * @since 0.1.0
 * @category accessors
 */
export const readCategory = (
  category: string,
  options?: ReadLogOptions
): Stream.Stream<RecordedEvent, InvalidInput | StoreError, EventStore> =>
  Stream.unwrap(Effect.map(EventStore, (store) => store.readCategory(category, options)))

/**
 * @since 0.1.0
 * @category accessors
 */
export const readAll = (options?: ReadLogOptions): Stream.Stream<RecordedEvent, InvalidInput | StoreError, EventStore> =>
  Stream.unwrap(Effect.map(EventStore, (store) => store.readAll(options)))

/**
 * @since 0.1.0
 * @category accessors
 */
export const streamVersion = (streamId: string): Effect.Effect<number, InvalidInput | StoreError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.streamVersion(streamId))

/**
 * @example
 * ```ts
 * import { Aggregate, EventStore } from "@mire/core"
 * import { Effect, Option, Schema } from "effect"
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
 * const program = Effect.gen(function* () {
 *   const account = yield* EventStore.load(Account, "42")
 *   yield* Option.match(account, {
 *     onNone: () => Effect.log("no such account"),
 *     onSome: (root) => Effect.log(`balance ${root.state.balance} at version ${root.version}`)
 *   })
 * })
 * ```
 * @since 0.1.0
 * @category accessors
 */
export const load = <S, E>(
  aggregate: Aggregate.Aggregate<S, E>,
  id: string,
  options?: LoadOptions
): Effect.Effect<Option.Option<AggregateRoot.AggregateRoot<S, E>>, LoadError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.load(aggregate, id, options))

/**
 * @since 0.1.0
 * @category accessors
 */
export const loadOrDefault = <S, E>(
  aggregate: Aggregate.Aggregate<S, E>,
  id: string,
  options?: LoadOptions
): Effect.Effect<AggregateRoot.AggregateRoot<S, E>, LoadError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.loadOrDefault(aggregate, id, options))

/**
 * @since 0.1.0
 * @category accessors
 */
export const loadForUpdate = <S, E>(
  aggregate: Aggregate.Aggregate<S, E>,
  id: string,
  options?: LoadOptions
): Effect.Effect<Option.Option<AggregateRoot.AggregateRoot<S, E>>, LoadError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.loadForUpdate(aggregate, id, options))

/**
 * @example
 * ```ts
 * import { Aggregate, AggregateRoot, EventStore } from "@mire/core"
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
 * const program = Effect.gen(function* () {
 *   const root = yield* EventStore.loadOrDefault(Account, "42")
 *   const saved = yield* EventStore.save(AggregateRoot.record(root, Deposited.make({ amount: 10 })))
 *   yield* Effect.log(`saved at version ${saved.version}`)
 * })
 * ```
 * @since 0.1.0
 * @category accessors
 */
export const save = <S, E>(
  root: AggregateRoot.AggregateRoot<S, E>
): Effect.Effect<AggregateRoot.AggregateRoot<S, E>, AppendError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.save(root))

/**
 * @since 0.1.0
 * @category accessors
 */
export const saveMany = <const Roots extends ReadonlyArray<AnyRoot>>(
  roots: Roots
): Effect.Effect<Roots, AppendError, EventStore> => Effect.flatMap(EventStore, (store) => store.saveMany(roots))

/**
 * @since 0.1.0
 * @category accessors
 */
export const loadSnapshotted = <S, E>(
  aggregate: Aggregate.Aggregate<S, E>,
  id: string,
  options?: LoadOptions
): Effect.Effect<Option.Option<AggregateRoot.AggregateRoot<S, E>>, LoadError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.loadSnapshotted(aggregate, id, options))

/**
 * @since 0.1.0
 * @category accessors
 */
export const saveSnapshotting = <S, E>(
  root: AggregateRoot.AggregateRoot<S, E>
): Effect.Effect<AggregateRoot.AggregateRoot<S, E>, AppendError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.saveSnapshotting(root))

/**
 * Runs `effect` in one transaction. An escape hatch for read-before-write
 * across aggregates: a long transaction on a hot stream blocks its writers
 * and holds back every subscription (the xmin horizon) until it ends.
 *
 * @example
 * ```ts
 * import { Aggregate, AggregateRoot, EventStore } from "@mire/core"
 * import { Effect, Option, Schema } from "effect"
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
 * // Both saves commit together or not at all.
 * const transfer = EventStore.transaction(
 *   Effect.gen(function* () {
 *     const from = yield* EventStore.loadForUpdate(Account, "a")
 *     const to = yield* EventStore.loadForUpdate(Account, "b")
 *     if (Option.isNone(from) || Option.isNone(to)) return yield* Effect.fail("no such account")
 *     yield* EventStore.save(AggregateRoot.record(from.value, Deposited.make({ amount: -10 })))
 *     yield* EventStore.save(AggregateRoot.record(to.value, Deposited.make({ amount: 10 })))
 *   })
 * )
 * ```
 * @since 0.1.0
 * @category accessors
 */
export const transaction = <A, E, R>(
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E | StoreError, R | EventStore> => Effect.flatMap(EventStore, (store) => store.transaction(effect))

/**
 * @since 0.1.0
 * @category accessors
 */
export const currentTransactionId: Effect.Effect<bigint, StoreError, EventStore> = Effect.flatMap(
  EventStore,
  (store) => store.currentTransactionId
)

/**
 * Archives a stream: read-only (appends fail with `StreamArchived`), left out
 * of `load` and `readCategory` unless they pass `includeArchived`; still read
 * by `readStream` and subscriptions.
 *
 * @example
 * ```ts
 * import { EventStore } from "@mire/core"
 * import { Effect } from "effect"
 *
 * const closeForGood = EventStore.archive("account-42").pipe(
 *   Effect.catchTag("StreamNotFound", () => Effect.log("no such account"))
 * )
 * ```
 * @since 0.2.0
 * @category accessors
 */
export const archive = (streamId: string): Effect.Effect<void, LifecycleError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.archive(streamId))

/**
 * Makes an archived stream live again.
 *
 * @since 0.2.0
 * @category accessors
 */
export const unarchive = (streamId: string): Effect.Effect<void, LifecycleError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.unarchive(streamId))

/**
 * Deletes a stream for good (data protection): its events and snapshot are
 * removed, and a `$StreamDeleted` tombstone takes its next version, so the
 * id cannot be reused (`StreamDeleted`) and projections can drop their rows
 * (`onStreamDeleted`).
 *
 * @example
 * ```ts
 * import { EventStore } from "@mire/core"
 *
 * const forget = EventStore.deleteStream("customer-42")
 * ```
 * @since 0.2.0
 * @category accessors
 */
export const deleteStream = (streamId: string): Effect.Effect<void, LifecycleError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.deleteStream(streamId))

/**
 * Removes a stream's events below version `before` for good (in short
 * transactions of at most `Retention.chunkSize` events), keeping its
 * snapshot as the new base. `before` may not pass the version of its
 * snapshot of `options.snapshotVersion` (the aggregate's snapshot `version`,
 * or the aggregate: a snapshot of another version counts as none), nor its
 * lowest dead letter: `SnapshotRequired` / `DeadLetterPending`, nothing
 * changes. `loadSnapshotted` still loads the stream; a plain `load` fails
 * with `StreamTruncated`.
 *
 * @example
 * ```ts
 * import { EventStore } from "@mire/core"
 * import { Effect } from "effect"
 *
 * // Account's snapshot definition has `version: 2`; passing the aggregate itself works too.
 * const compact = EventStore.truncate("account-42", 1000, { snapshotVersion: 2 }).pipe(
 *   Effect.tap(({ removed }) => Effect.log(`removed ${removed} events`)),
 *   Effect.catchTag("SnapshotRequired", (e) => Effect.log(e.message))
 * )
 * ```
 * @since 0.2.0
 * @category accessors
 */
export const truncate = (
  streamId: string,
  before: number,
  options: TruncateOptions
): Effect.Effect<Truncated, TruncateError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.truncate(streamId, before, options))

/**
 * A stream's {@link Retention.Extent} (its version, first kept version,
 * snapshot and lowest dead letter, deleted or not), read without locking:
 * `None` when there is no such stream.
 *
 * @since 0.2.0
 * @category accessors
 */
export const streamExtent = (
  streamId: string
): Effect.Effect<Option.Option<Retention.Extent>, InvalidInput | StoreError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.streamExtent(streamId))

/**
 * Writes a snapshot of an aggregate's current state now, whatever its
 * snapshot policy says: the way to let `truncate` (or retention) go up to
 * the stream's current version. Returns the version snapshotted (`None`: no
 * such stream).
 *
 * @example
 * ```ts
 * import { Aggregate, EventStore } from "@mire/core"
 * import { Effect, Option, Schema } from "effect"
 *
 * const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Number })
 * const Account = Aggregate.make({
 *   category: "account",
 *   events: Deposited,
 *   initial: { balance: 0 },
 *   apply: (state, event) => ({ balance: state.balance + event.amount }),
 *   snapshot: { schema: Schema.Struct({ balance: Schema.Number }), version: 1, every: 1000 }
 * })
 *
 * // Snapshot account-42 where it is, then drop everything before that version.
 * const compact = EventStore.snapshot(Account, "42").pipe(
 *   Effect.flatMap((version) =>
 *     Option.isNone(version)
 *       ? Effect.log("no such account")
 *       : Effect.asVoid(EventStore.truncate("account-42", version.value, { snapshotVersion: Account }))
 *   )
 * )
 * ```
 * @since 0.2.0
 * @category accessors
 */
export const snapshot = <S, E>(
  aggregate: Aggregate.Aggregate<S, E>,
  id: string
): Effect.Effect<Option.Option<number>, LoadError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.snapshot(aggregate, id))

/**
 * The ids of a category's streams (live and archived; deleted ones left
 * out), in id order.
 *
 * @since 0.2.0
 * @category accessors
 */
export const streamIds = (category: string): Stream.Stream<string, InvalidInput | StoreError, EventStore> =>
  Stream.unwrap(Effect.map(EventStore, (store) => store.streamIds(category)))

/**
 * Applies a retention policy to one stream (never past its newest
 * snapshot of `options.snapshotVersion`, nothing without one; never past
 * its lowest dead letter).
 *
 * @since 0.2.0
 * @category accessors
 */
export const retain = (
  streamId: string,
  policy: Retention.Policy,
  options: RetentionOptions
): Effect.Effect<Retention.Outcome, InvalidInput | StoreError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.retain(streamId, policy, options))

/**
 * Applies a retention policy to every stream of a category, in short
 * transactions (one stream, at most `Retention.chunkSize` events each):
 * removes the events older than `maxAge` and those beyond the newest
 * `maxCount`, never past a stream's newest snapshot of
 * `options.snapshotVersion` nor its lowest dead letter, and reports what it
 * did (`dryRun`: what it would do).
 *
 * @example
 * ```ts
 * import { EventStore } from "@mire/core"
 * import { Effect } from "effect"
 *
 * const nightly = EventStore.applyRetention("account", { maxAge: "365 days", maxCount: 10_000 }, { snapshotVersion: 2 }).pipe(
 *   Effect.tap((report) => Effect.log(`${report.eventsRemoved} events removed from ${report.truncated} streams`))
 * )
 * ```
 * @since 0.2.0
 * @category accessors
 */
export const applyRetention = (
  category: string,
  policy: Retention.Policy,
  options: RetentionOptions
): Effect.Effect<Retention.Report, InvalidInput | StoreError, EventStore> =>
  Effect.flatMap(EventStore, (store) => store.applyRetention(category, policy, options))

/**
 * The in-memory `EventStore` with the given limits (`defaults` where not
 * given), plus its driver (`InMemory.Driver`) for the other in-memory
 * services and for tests that write raw rows. A fresh, empty store per
 * layer build.
 *
 * @example
 * ```ts
 * import { EventStore } from "@mire/core"
 * import { Effect } from "effect"
 *
 * const program = EventStore.streamVersion("account-42")
 * const runnable = program.pipe(Effect.provide(EventStore.layerMemoryWith({ maxEventSize: 64 * 1024 })))
 * ```
 * @since 0.1.0
 * @category layers
 */
export const layerMemoryWith = (options: Partial<Options>): Layer.Layer<EventStore | Memory.Driver> =>
  // Suspended: the driver module imports this one, so it is read only when the layer is built.
  Layer.effectContext(
    Effect.suspend(() =>
      Effect.map(Memory.make(options), ({ driver, eventStore }) =>
        Context.make(EventStore, eventStore).pipe(Context.add(Memory.Driver, driver))
      )
    )
  )

/**
 * The in-memory `EventStore` (plus its driver, `InMemory.Driver`, for the
 * other in-memory services); `InMemory.layer` adds subscriptions, leases and
 * sagas over the same log.
 *
 * @example
 * ```ts
 * import { EventStore } from "@mire/core"
 * import { Effect } from "effect"
 *
 * const program = EventStore.streamVersion("account-42")
 * Effect.runPromise(program.pipe(Effect.provide(EventStore.layerMemory))).then((version) => assert.strictEqual(version, 0))
 * ```
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<EventStore | Memory.Driver> = layerMemoryWith({})
