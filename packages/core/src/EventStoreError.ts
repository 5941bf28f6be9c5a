/**
 * The typed errors of mire. Every public operation names the ones it can fail
 * with; driver errors never leak (they become {@link StoreError}).
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * An append lost an optimistic-concurrency race, or its expected version was
 * wrong. `actual` is the stream's real current version (`null` when the stream
 * does not exist).
 *
 * @example
 * ```ts
 * import { Aggregate, AggregateRoot, EventStore } from "@mire/core"
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
 * const root = AggregateRoot.record(AggregateRoot.make(Account, "42"), Opened.make({ owner: "Ada" }))
 * const save = EventStore.save(root).pipe(
 *   Effect.catchTag("ConcurrencyConflict", (e) => Console.log(`another writer got there first: ${e.message}`))
 * )
 * ```
 * @since 0.1.0
 * @category errors
 */
export class ConcurrencyConflict extends Schema.TaggedError<ConcurrencyConflict>()("ConcurrencyConflict", {
  streamId: Schema.String,
  expected: Schema.String,
  actual: Schema.NullOr(Schema.Number)
}) {
  override get message(): string {
    return `concurrency conflict on ${this.streamId}: expected ${this.expected}, actual ${
      this.actual === null ? "no stream" : `v${this.actual}`
    }`
  }
}

/**
 * A stored event could not be decoded: its type is unknown, its schema
 * version is newer than the code or has no upcaster chain, or its data fails
 * the event Schema.
 *
 * @since 0.1.0
 * @category errors
 */
export class EventDecodeError extends Schema.TaggedError<EventDecodeError>()("EventDecodeError", {
  streamId: Schema.String,
  streamVersion: Schema.Number,
  globalPosition: Schema.BigIntFromSelf,
  eventType: Schema.String,
  schemaVersion: Schema.Number,
  issue: Schema.String
}) {
  override get message(): string {
    return `cannot decode ${this.eventType}@${this.schemaVersion} at ${this.streamId} v${this.streamVersion} (position ${this.globalPosition}): ${this.issue}`
  }
}

/**
 * A loaded stream's versions are not `1..n` without gaps, so folding it would
 * produce a wrong state. mire refuses to fold.
 *
 * @since 0.1.0
 * @category errors
 */
export class StreamCorrupt extends Schema.TaggedError<StreamCorrupt>()("StreamCorrupt", {
  streamId: Schema.String,
  expectedVersion: Schema.Number,
  foundVersion: Schema.Number
}) {
  override get message(): string {
    return `stream ${this.streamId} is corrupt: expected v${this.expectedVersion}, found v${this.foundVersion}`
  }
}

/**
 * The stream was truncated: its versions below `truncatedBefore` are gone,
 * so a fold from version 1 (`load`, or `loadSnapshotted` when the snapshot
 * cannot be used) would miss them. mire refuses to fold; load it with
 * `loadSnapshotted` and a snapshot at or above `truncatedBefore`.
 *
 * @since 0.2.0
 * @category errors
 */
export class StreamTruncated extends Schema.TaggedError<StreamTruncated>()("StreamTruncated", {
  streamId: Schema.String,
  truncatedBefore: Schema.Number
}) {
  override get message(): string {
    return `stream ${this.streamId} is truncated before v${this.truncatedBefore}: load it from its snapshot (loadSnapshotted)`
  }
}

/**
 * A truncation was refused (nothing changed): truncating before `before`
 * needs a snapshot at version `before` or later, of the snapshot version
 * (schema version) the aggregate reads, which becomes the stream's new base.
 * `snapshotVersion` is the stream version of its stored snapshot (`null`: it
 * has none); `unusable` is set when that snapshot is of another snapshot
 * version than `expected`, so it counts as none.
 *
 * @since 0.2.0
 * @category errors
 */
export class SnapshotRequired extends Schema.TaggedError<SnapshotRequired>()("SnapshotRequired", {
  streamId: Schema.String,
  before: Schema.Number,
  snapshotVersion: Schema.NullOr(Schema.Number),
  unusable: Schema.optional(Schema.Struct({ schemaVersion: Schema.Number, expected: Schema.Number }))
}) {
  override get message(): string {
    const has =
      this.snapshotVersion === null
        ? "it has none"
        : this.unusable === undefined
          ? `its snapshot is at v${this.snapshotVersion}`
          : `its snapshot at v${this.snapshotVersion} is of snapshot version ${this.unusable.schemaVersion}, not ${this.unusable.expected}, so it cannot be loaded from`
    return `cannot truncate ${this.streamId} before v${this.before}: that needs a snapshot at v${this.before} or later (${has})`
  }
}

/**
 * A truncation was refused (nothing changed): the stream has a dead letter
 * (a projection's failed or parked event) at `deadLetterVersion`, below
 * `before`, and truncating would remove its event before it is retried.
 * Retry or discard the stream's dead letters first.
 *
 * @since 0.2.0
 * @category errors
 */
export class DeadLetterPending extends Schema.TaggedError<DeadLetterPending>()("DeadLetterPending", {
  streamId: Schema.String,
  before: Schema.Number,
  deadLetterVersion: Schema.Number
}) {
  override get message(): string {
    return `cannot truncate ${this.streamId} before v${this.before}: v${this.deadLetterVersion} has a dead letter (retry or discard it first: mire dead-letters)`
  }
}

/**
 * Bad input, refused before anything is written: an invalid stream id or
 * category, a bad expected version or limit, an event that fails its Schema.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidInput extends Schema.TaggedError<InvalidInput>()("InvalidInput", {
  field: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid ${this.field}: ${this.reason}`
  }
}

/**
 * Coarse classification of storage failures, so callers can react (retry a
 * serialization failure, back off on a lock timeout) without SQL codes.
 * `Connection` covers an unreachable server, an unknown database and a
 * refused login; `NotMigrated` means mire's tables or functions are missing.
 *
 * @since 0.1.0
 * @category errors
 */
export const StoreErrorKind = Schema.Literal(
  "Connection",
  "Timeout",
  "LockNotAvailable",
  "SerializationFailure",
  "Deadlock",
  "NotMigrated",
  "Other"
)

/**
 * @since 0.1.0
 * @category errors
 */
export type StoreErrorKind = typeof StoreErrorKind.Type

/**
 * The storage failed. `kind` is the coarse class; `cause` keeps the driver's
 * error for logs.
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  kind: StoreErrorKind,
  operation: Schema.String,
  cause: Schema.Defect
}) {
  override get message(): string {
    const detail = this.cause instanceof Error ? this.cause.message : String(this.cause)
    if (this.kind === "Connection") return `${detail} (${this.operation} failed: Connection)`
    if (this.kind === "NotMigrated") {
      return `${this.operation} failed: mire's schema is not installed (${detail}); run \`mire migrate\` or \`PgMigrations.migrate()\``
    }
    return `${this.operation} failed (${this.kind}): ${detail}`
  }
}

/**
 * A subscription was about to deliver an event at or below the version it
 * already delivered for that stream (for example after a checkpoint written
 * past a held event). Delivery stops instead of regressing a read model.
 *
 * @since 0.1.0
 * @category errors
 */
export class OrderingViolation extends Schema.TaggedError<OrderingViolation>()("OrderingViolation", {
  subscriptionId: Schema.String,
  streamId: Schema.String,
  version: Schema.Number,
  lastDelivered: Schema.Number
}) {
  override get message(): string {
    return `subscription ${this.subscriptionId}: ${this.streamId} v${this.version} arrived after v${this.lastDelivered} was delivered`
  }
}

/**
 * A subscription holds a stream's `seen` version waiting for `missing`, and
 * `missing` is not in the log although a later version is committed: it was
 * deleted (a clean-up, a partial restore) and can never arrive. Delivery
 * stops instead of holding the stream (and the checkpoint) forever.
 *
 * @since 0.1.0
 * @category errors
 */
export class MissingVersion extends Schema.TaggedError<MissingVersion>()("MissingVersion", {
  subscriptionId: Schema.String,
  streamId: Schema.String,
  missing: Schema.Number,
  seen: Schema.Number
}) {
  override get message(): string {
    return `subscription ${this.subscriptionId}: ${this.streamId} v${this.missing} is missing from the log (v${this.seen} is committed), so ${this.streamId} cannot be delivered past v${this.missing - 1}`
  }
}

/**
 * The log or a checkpoint holds a transaction id at or above the server's
 * next one: the database was restored (or replicated) into a cluster whose
 * xid counter is behind the original's. New events would sort behind every
 * checkpoint and never be delivered, so the subscription refuses to start.
 * Recovery: raise the new cluster's xid epoch above `storedTransactionId`
 * (`pg_resetwal --epoch`, with the server stopped, before it takes writes);
 * see the README, "Restoring into a new cluster".
 *
 * @since 0.1.0
 * @category errors
 */
export class XidAhead extends Schema.TaggedError<XidAhead>()("XidAhead", {
  /** The subscription that found it ("" for a status check). */
  subscriptionId: Schema.String,
  /** Where: the event log, or this subscription's checkpoint. */
  source: Schema.Literal("log", "checkpoint"),
  storedTransactionId: Schema.BigIntFromSelf,
  serverTransactionId: Schema.BigIntFromSelf
}) {
  override get message(): string {
    const where = this.source === "log" ? "the event log" : `the checkpoint of ${this.subscriptionId}`
    const epoch = (this.storedTransactionId >> 32n) + 1n
    return `${where} holds transaction id ${this.storedTransactionId}, ahead of this server's next transaction id ${this.serverTransactionId}: the database was restored or replicated into a cluster with a younger transaction counter, so new events would sort behind every checkpoint and never be delivered. Stop the server and raise its xid epoch before it takes writes (pg_resetwal --epoch=${epoch} <datadir>), then restart; see the README, "Restoring into a new cluster"`
  }
}

/**
 * The stream does not exist (it was never appended to): nothing to archive,
 * unarchive or delete.
 *
 * @since 0.2.0
 * @category errors
 */
export class StreamNotFound extends Schema.TaggedError<StreamNotFound>()("StreamNotFound", {
  streamId: Schema.String
}) {
  override get message(): string {
    return `stream ${this.streamId} does not exist`
  }
}

/**
 * The stream is archived: read-only until it is unarchived. An append to it
 * writes nothing.
 *
 * @since 0.2.0
 * @category errors
 */
export class StreamArchived extends Schema.TaggedError<StreamArchived>()("StreamArchived", {
  streamId: Schema.String
}) {
  override get message(): string {
    return `stream ${this.streamId} is archived (read-only); unarchive it to append`
  }
}

/**
 * The stream was deleted: its events are gone and its id stays taken by a
 * tombstone, so an append to it (or an archive) writes nothing.
 * `tombstoneVersion` is the version of its `$StreamDeleted` event (the
 * deleted stream's last version plus one).
 *
 * @since 0.2.0
 * @category errors
 */
export class StreamDeleted extends Schema.TaggedError<StreamDeleted>()("StreamDeleted", {
  streamId: Schema.String,
  tombstoneVersion: Schema.Number
}) {
  override get message(): string {
    return `stream ${this.streamId} was deleted (tombstone at v${this.tombstoneVersion}); its id cannot be reused`
  }
}
