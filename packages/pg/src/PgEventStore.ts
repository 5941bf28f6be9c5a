/**
 * The PostgreSQL event store: the `EventStore` service over `@effect/sql`'s
 * `SqlClient`.
 *
 * - An append is one statement (`mire_append_stream` for one stream,
 *   `mire_append_all` for `appendMany`: functions, so their plans are kept
 *   per session): a compare-and-set on the stream rows and an insert of
 *   every event, so a version conflict is seen at statement time (never at
 *   COMMIT) and a losing writer writes nothing.
 * - Concurrent single-stream appends made outside a transaction share a
 *   statement (`mire_append_each`, see {@link Coalescing}), each still
 *   decided on its own.
 * - One stream's forward reads and loads are functions too
 *   (`mire_read_stream_rows`, `mire_load_page`, `mire_load_snapshot_page`).
 * - It notifies `mire_events` after the commit, never inside the appending
 *   transaction (a notifying commit takes a database-wide lock through its
 *   WAL flush, which serialises commits): each store layer has one notifier
 *   that sends the categories written since its last notification, one
 *   statement in flight, so concurrent appends cost about one NOTIFY; this
 *   process's subscribers are woken in-process at once. Inside
 *   `EventStore.transaction` the notification follows that transaction's
 *   commit; inside a transaction mire did not open, it is sent within it.
 * - Transactions are ambient: inside `EventStore.transaction` every store
 *   call and every `sql` statement of the program share one connection.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlError from "@effect/sql/SqlError"
import * as EventStore from "@mire/core/EventStore"
import {
  ConcurrencyConflict,
  InvalidInput,
  StoreError,
  StreamArchived,
  StreamDeleted
} from "@mire/core/EventStoreError"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import type { CommittedEvents } from "@mire/core/RecordedEvent"
import type { StoredSnapshot } from "@mire/core/Snapshot"
import * as StreamId from "@mire/core/StreamId"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as Tracer from "effect/Tracer"
import * as Coalesce from "./internal/coalesce.js"
import { refail, sqlState } from "./internal/errors.js"
import * as Execute from "./internal/execute.js"
import {
  bigintOf,
  corruptRow,
  decodeEventRows,
  decodeEventRowsSync,
  decodeFoldRowsSync,
  eventColumns,
  knownStream
} from "./internal/rows.js"
import * as Lifecycle from "./internal/lifecycle.js"
import { AfterCommit, transaction as transactionWith } from "./internal/transaction.js"
import * as Truncation from "./internal/truncation.js"
import * as PgSchema from "./PgSchema.js"
import * as PgWakeups from "./PgWakeups.js"

export {
  /**
   * Applies mire's migrations (the same function as `PgMigrations.migrate`).
   *
   * @since 0.1.0
   */
  migrate
} from "./PgMigrations.js"

/**
 * The channel appends notify on in the `public` schema (payload: the
 * category); another schema's is its `PgSchema` names' `eventsChannel`.
 *
 * @since 0.1.0
 */
export const channel = "mire_events"

/**
 * How a store layer coalesces concurrent appends (a `Context.Reference`:
 * provide {@link layerCoalescing} to change it).
 *
 * A single-stream append made outside a transaction, with no event id of
 * the caller's, waits for a free one of `statements` workers; every append
 * waiting when one becomes free (at most `maxAppends`) goes out with it in
 * one statement (`mire_append_each`), so concurrent commands share one round
 * trip, one commit and one WAL flush. Each append is still decided on its
 * own: its expectation, its refusal (`ConcurrencyConflict`,
 * `StreamArchived`, `StreamDeleted`) and its result are its own, and an
 * append that finds a worker free goes out at once. Appends of one statement
 * share its transaction id. A statement never waits long for a stream row
 * another transaction holds (a `loadForUpdate` scope, a long transaction):
 * its lock waits end after 50 ms, and each of its appends then runs alone,
 * in its caller's fiber, while the worker goes on. `statements: 0` sends
 * every append as its own statement.
 *
 * @since 0.3.0
 * @category models
 */
export interface CoalescingOptions {
  /** Coalesced statements in flight at once (each holds a pool connection while it runs); 0 turns coalescing off. */
  readonly statements: number
  /** The most appends one statement carries. */
  readonly maxAppends: number
}

const defaultCoalescing: CoalescingOptions = { statements: 1, maxAppends: 64 }

/**
 * The coalescing of the store layers built where it is provided; by default
 * 1 statement of at most 64 appends (one statement in flight makes the
 * biggest batches, the fewest statements per append).
 *
 * @since 0.3.0
 * @category context
 */
export class Coalescing extends Context.Reference<Coalescing>()("@mire/pg/PgEventStore/Coalescing", {
  defaultValue: (): CoalescingOptions => defaultCoalescing
}) {}

/**
 * Provides {@link Coalescing} to the store layers built under it.
 *
 * @example
 * ```ts
 * import { PgEventStore, PgStore } from "@mire/pg"
 * import { Layer } from "effect"
 *
 * // Every append in its own statement:
 * const store = PgStore.layer.pipe(Layer.provide(PgEventStore.layerCoalescing({ statements: 0 })))
 * ```
 * @since 0.3.0
 * @category layers
 */
export const layerCoalescing = (options: Partial<CoalescingOptions>): Layer.Layer<Coalescing, InvalidInput> => {
  const statements = options.statements ?? defaultCoalescing.statements
  const maxAppends = options.maxAppends ?? defaultCoalescing.maxAppends
  if (!Number.isSafeInteger(statements) || statements < 0) {
    return Layer.fail(new InvalidInput({ field: "statements", reason: `${statements} is not a non-negative integer` }))
  }
  if (!Number.isSafeInteger(maxAppends) || maxAppends < 1) {
    return Layer.fail(new InvalidInput({ field: "maxAppends", reason: `${maxAppends} is not a positive integer` }))
  }
  return Layer.succeed(Coalescing, { statements, maxAppends })
}

/** The distinct categories of an append's requests. */
const categoriesOf = (requests: ReadonlyArray<EventStore.StorableAppend>): ReadonlyArray<string> => {
  if (requests.length === 1) return [requests[0]!.category]
  return [...new Set(requests.map((r) => r.category))]
}

/** Runs an effect with a span as its parent, or as it is. */
type UnderSpan = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

const asIs: UnderSpan = (effect) => effect

const appendRowFault = (reason: string): StoreError =>
  new StoreError({ kind: "Other", operation: "decode append row", cause: new Error(reason) })

const kindOf = (expected: ExpectedVersion.ExpectedVersion): string =>
  expected._tag === "Any"
    ? "any"
    : expected._tag === "NoStream" || (expected._tag === "Exact" && expected.version === 0)
      ? "none"
      : expected._tag === "StreamExists"
        ? "exists"
        : "exact"

/** The columns of several streams' appends (see `requestColumns`). */
interface RequestColumns {
  readonly streamIds: Array<string>
  readonly categories: Array<string>
  readonly kinds: Array<string>
  readonly expected: Array<number>
  readonly counts: Array<number>
  readonly eventIds: Array<string>
  readonly eventStreams: Array<string>
  readonly indexes: Array<number>
  readonly types: Array<string>
  readonly schemaVersions: Array<number>
  readonly data: Array<string>
  readonly metadata: Array<string>
}

/** Backoff of a failed NOTIFY (retried with the same categories; later ones wait for the next). */
const notifyRetry = Schedule.exponential("50 millis").pipe(Schedule.union(Schedule.spaced("2 seconds")))

/**
 * The least time between two `pg_notify` statements of one store. The first after a quiet
 * spell goes at once; under load, what is marked meanwhile goes in the next one. Sent back to
 * back, they were one per coalesced append statement, half of all statements with 16 writers
 * on PostgreSQL 18 (issue 12): 5 ms apart, the same appends ran 25-30% faster.
 */
const notifySpacing = Duration.millis(5)

/**
 * The coalescing notifier of one store layer: `mark` wakes this process's
 * subscribers (through `hub`, when there is one) at once and marks the
 * categories dirty; one fiber, living in the current scope, sends every dirty
 * category in one `pg_notify` statement, at most one in flight and at least
 * {@link notifySpacing} apart. What is still marked when the scope closes is
 * sent then.
 */
const makeNotifier = (
  sql: SqlClient.SqlClient,
  hub: Option.Option<PubSub.PubSub<PgWakeups.Wakeup>>,
  channel: string
) =>
  Effect.gen(function* () {
    // Marked by every append, drained by the one sender fiber: a plain set (not a Ref of
    // immutable sets) because an append adds to it on the hot path.
    const dirty = new Set<string>()
    const signal = yield* Queue.sliding<void>(1)
    const drain = Effect.sync(() => {
      const categories = [...dirty]
      dirty.clear()
      return categories
    })
    // Its own transaction writes nothing to keep: committing it without waiting for the WAL
    // flush spares the appends' flushes (delivery is the same; notifications are never durable).
    const notify = (categories: ReadonlyArray<string>) =>
      categories.length === 0
        ? Effect.void
        : Effect.asVoid(
            sql`SELECT pg_notify(${channel}, c), set_config('synchronous_commit', 'off', true)
                FROM unnest(${categories}::text[]) AS c`
          )
    const send = Queue.take(signal).pipe(
      Effect.zipRight(drain),
      Effect.flatMap((categories) =>
        notify(categories).pipe(
          Effect.tapError((error) => Effect.logWarning(`mire: notifying ${channel} failed (${error.message}); retrying`)),
          Effect.retry(notifyRetry)
        )
      )
    )
    // Registered before the sender is forked, so it runs after the sender is stopped: what was
    // marked in the last spacing still reaches the other processes when the store closes.
    yield* Effect.addFinalizer(() => Effect.flatMap(drain, notify).pipe(Effect.timeout("1 second"), Effect.ignore))
    yield* Effect.forkScoped(Effect.repeat(send, Schedule.spaced(notifySpacing)))
    const publish = Option.match(hub, {
      onNone: () => (_: ReadonlyArray<string>) => Effect.void,
      onSome:
        (pubsub) =>
        (categories: ReadonlyArray<string>) =>
          Effect.asVoid(PubSub.publishAll(pubsub, categories.map((payload) => ({ channel, payload }))))
    })
    return {
      mark: (categories: ReadonlyArray<string>): Effect.Effect<void> =>
        Effect.zipRight(
          publish(categories),
          Effect.suspend(() => {
            // While some category is marked, the sender has a signal to take or is about to drain
            // the set (it drains right after it takes one): only the first mark signals.
            const idle = dirty.size === 0
            for (const category of categories) dirty.add(category)
            return idle ? Effect.asVoid(Queue.offer(signal, undefined)) : Effect.void
          })
        )
    }
  })

/**
 * The storage primitives over a `SqlClient`; its notifier lives in the
 * current scope. Appends also wake this process's subscribers through
 * `PgWakeups.LocalWakeups` when it is provided (the layers provide it).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeStorage: Effect.Effect<EventStore.Storage, never, SqlClient.SqlClient | Scope.Scope> = Effect.gen(function* () {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const execute = yield* Execute.fromContext
  const columns = sql.literal(eventColumns)
  const names = yield* PgSchema.PgSchema
  const channel = names.eventsChannel
  const notifier = yield* makeNotifier(sql, yield* Effect.serviceOption(PgWakeups.LocalWakeups), channel)

  /**
   * After an append: outside a transaction it has committed, so mark its categories; inside
   * `EventStore.transaction`, mark them once that commits; inside a transaction mire did not
   * open (no commit hook), NOTIFY within it (delivered when it commits).
   */
  const notifyCommitted = (categories: ReadonlyArray<string>) =>
    Effect.contextWithEffect((context: Context.Context<never>) => {
      if (Option.isNone(Context.getOption(context, SqlClient.TransactionConnection))) return notifier.mark(categories)
      const hooks = Context.getOption(context, AfterCommit)
      return Option.isSome(hooks)
        ? hooks.value.register(notifier.mark(categories))
        : Effect.asVoid(sql`SELECT pg_notify(${channel}, c) FROM unnest(${categories}::text[]) AS c`)
    })

  const inTransaction = Effect.contextWith((context: Context.Context<never>) =>
    Option.isSome(Context.getOption(context, SqlClient.TransactionConnection))
  )

  const transaction = transactionWith(sql)

  /** Checks a result row of the append functions (a row of the wrong shape is a `StoreError`). */
  const appendRow = (row: unknown, streamId: string | undefined): CommittedEvents | StoreError => {
    if (!Predicate.isRecord(row)) return appendRowFault("is not an object")
    const id = streamId ?? row.stream_id
    const { first_version, last_version } = row
    if (typeof id !== "string") return appendRowFault("stream_id is not a string")
    if (typeof first_version !== "number" || typeof last_version !== "number") return appendRowFault("a version is not a number")
    const firstPosition = bigintOf(row.first_position)
    const lastPosition = bigintOf(row.last_position)
    const transactionId = bigintOf(row.transaction_id)
    if (firstPosition === undefined || lastPosition === undefined || transactionId === undefined) {
      return appendRowFault("a position or transaction id is not an integer")
    }
    // The row names a stream this append validated: branded, not checked again.
    return { streamId: StreamId.fromStored(id), firstVersion: first_version, lastVersion: last_version, firstPosition, lastPosition, transactionId }
  }

  /**
   * JSON texts as one `jsonb[]` argument of parameter `$n`: the SQL expression and its value. The
   * texts go joined by newlines and are split again on the server (`string_to_array`): JSON text
   * from `Json.encode` never holds a newline (`JSON.stringify` escapes every control character),
   * and one text parameter spares the client `pg`'s escaping of each text into an array literal
   * (most of a large append's client CPU). A text holding a newline (not written by `Json.encode`)
   * makes them go as an array.
   */
  const jsonbArray = (texts: ReadonlyArray<string>, n: number): readonly [string, string | ReadonlyArray<string>] => {
    for (let i = 0; i < texts.length; i++) {
      if (texts[i]!.includes("\n")) return [`$${n}::jsonb[]`, texts]
    }
    return [`string_to_array($${n}, chr(10))::jsonb[]`, texts.join("\n")]
  }

  /**
   * The array literal of numbers: one `join` instead of `pg` quoting every element. (A number's
   * text is one element; one that is no integer fails the server's input. Strings always go
   * through `pg`, which quotes each one: an unquoted `a,b` would be two elements, shifting every
   * later event's column in `mire_append_all`.)
   */
  const numberArray = (values: ReadonlyArray<number>): string => `{${values.join(",")}}`

  /** The columns of one stream's events, as the append functions take them. */
  const eventArrays = (events: ReadonlyArray<EventStore.StorableEvent>) => {
    const n = events.length
    const ids = new Array<string>(n)
    const types = new Array<string>(n)
    const schemaVersions = new Array<number>(n)
    const data = new Array<string>(n)
    const metadata = new Array<string>(n)
    for (let i = 0; i < n; i++) {
      const event = events[i]!
      ids[i] = event.eventId
      types[i] = event.eventType
      schemaVersions[i] = event.schemaVersion
      data[i] = event.dataJson
      metadata[i] = event.metadataJson
    }
    return {
      ids,
      types,
      schemaVersions: numberArray(schemaVersions),
      data: jsonbArray(data, 8),
      metadata: jsonbArray(metadata, 9)
    }
  }

  /** One stream: `mire_append_stream`; no row means its expectation did not hold. */
  const appendStreamStatement = (request: EventStore.StorableAppend) => {
    const e = eventArrays(request.events)
    return execute(
      `SELECT * FROM ${names.qualify("mire_append_stream")}($1, $2, $3, $4, $5::uuid[], $6::text[], $7::int4[], ${e.data[0]}, ${e.metadata[0]})`,
      [
        request.streamId,
        request.category,
        kindOf(request.expected),
        request.expected._tag === "Exact" ? request.expected.version : 0,
        e.ids,
        e.types,
        e.schemaVersions,
        e.data[1],
        e.metadata[1]
      ]
    )
  }

  /** The columns of several streams' appends, as `mire_append_all` and `mire_append_each` take them. */
  const requestColumns = (requests: ReadonlyArray<EventStore.StorableAppend>) => {
    const c: RequestColumns = {
      streamIds: [],
      categories: [],
      kinds: [],
      expected: [],
      counts: [],
      eventIds: [],
      eventStreams: [],
      indexes: [],
      types: [],
      schemaVersions: [],
      data: [],
      metadata: []
    }
    for (const request of requests) {
      c.streamIds.push(request.streamId)
      c.categories.push(request.category)
      c.kinds.push(kindOf(request.expected))
      c.expected.push(request.expected._tag === "Exact" ? request.expected.version : 0)
      c.counts.push(request.events.length)
      for (let i = 0; i < request.events.length; i++) {
        const event = request.events[i]!
        c.eventIds.push(event.eventId)
        c.eventStreams.push(request.streamId)
        c.indexes.push(i + 1)
        c.types.push(event.eventType)
        c.schemaVersions.push(event.schemaVersion)
        c.data.push(event.dataJson)
        c.metadata.push(event.metadataJson)
      }
    }
    return c
  }

  /** Several streams: `mire_append_all`, all or nothing; a lost expectation raises `MR409` naming the stream. */
  const appendAllStatement = (requests: ReadonlyArray<EventStore.StorableAppend>) => {
    const c = requestColumns(requests)
    const [dataSql, dataValue] = jsonbArray(c.data, 11)
    const [metadataSql, metadataValue] = jsonbArray(c.metadata, 12)
    return execute(
      `SELECT * FROM ${names.qualify("mire_append_all")}($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::uuid[],
         $7::text[], $8::int8[], $9::text[], $10::int4[], ${dataSql}, ${metadataSql})`,
      [
        c.streamIds,
        c.categories,
        c.kinds,
        c.expected,
        c.counts,
        c.eventIds,
        c.eventStreams,
        numberArray(c.indexes),
        c.types,
        numberArray(c.schemaVersions),
        dataValue,
        metadataValue
      ]
    )
  }

  /** Independent single-stream appends: `mire_append_each`, one result row per append that held. */
  const appendEachStatement = (requests: ReadonlyArray<EventStore.StorableAppend>) => {
    const c = requestColumns(requests)
    const [dataSql, dataValue] = jsonbArray(c.data, 9)
    const [metadataSql, metadataValue] = jsonbArray(c.metadata, 10)
    return execute(
      `SELECT * FROM ${names.qualify("mire_append_each")}($1::text[], $2::text[], $3::text[], $4::int8[], $5::int4[], $6::uuid[],
         $7::text[], $8::int4[], ${dataSql}, ${metadataSql})`,
      [
        c.streamIds,
        c.categories,
        c.kinds,
        numberArray(c.expected),
        numberArray(c.counts),
        c.eventIds,
        c.types,
        numberArray(c.schemaVersions),
        dataValue,
        metadataValue
      ]
    )
  }

  const lifecycle = Lifecycle.make(sql, names, notifyCommitted)

  /**
   * Why a stream refused an append (its compare-and-set returned no row): deleted, archived, or
   * its expectation did not hold (with its current version).
   */
  const conflictOf = lifecycle.refusalOf

  /** The event id of a unique violation on `es_events_event_id_key`, if that is what `error` is. */
  const duplicateId = (error: SqlError.SqlError): string | undefined => {
    const cause = error.cause
    if (sqlState(error) !== "23505" || !Predicate.hasProperty(cause, "constraint")) return undefined
    if (cause.constraint !== "es_events_event_id_key") return undefined
    const detail = Predicate.hasProperty(cause, "detail") && typeof cause.detail === "string" ? cause.detail : ""
    return /\(event_id\)=\(([0-9a-f-]+)\)/.exec(detail)?.[1] ?? ""
  }

  /**
   * The conflict `mire_append_all` raised (SQLSTATE MR409: DETAIL the stream id, HINT its version),
   * if that is what `error` is. Built from the error alone: inside a caller's savepoint no query
   * can run until the savepoint has rolled back.
   */
  const lostExpectation = (
    requests: ReadonlyArray<EventStore.StorableAppend>,
    error: SqlError.SqlError
  ): ConcurrencyConflict | StreamArchived | StreamDeleted | undefined => {
    const cause = error.cause
    const state = sqlState(error)
    if (
      (state !== "MR409" && state !== "MR410" && state !== "MR423") ||
      !Predicate.hasProperty(cause, "detail") ||
      !Predicate.hasProperty(cause, "hint")
    ) {
      return undefined
    }
    const request = requests.find((r) => r.streamId === cause.detail)
    const actual = typeof cause.hint === "string" && /^[0-9]+$/.test(cause.hint) ? Number(cause.hint) : undefined
    if (request === undefined || actual === undefined) return undefined
    // Raised by `mire_append_all` (migration 0012) for a deleted or an archived stream.
    if (state === "MR410") return new StreamDeleted({ streamId: request.streamId, tombstoneVersion: actual })
    if (state === "MR423") return new StreamArchived({ streamId: request.streamId })
    return new ConcurrencyConflict({
      streamId: request.streamId,
      expected: ExpectedVersion.format(request.expected),
      actual: actual === 0 ? null : actual
    })
  }

  const appendFailure =
    (requests: ReadonlyArray<EventStore.StorableAppend>) =>
    (error: SqlError.SqlError): Effect.Effect<never, SqlError.SqlError | EventStore.AppendError> => {
      const id = duplicateId(error)
      if (id !== undefined) return Effect.fail(EventStore.duplicateEventId(requests, id))
      return Effect.fail(lostExpectation(requests, error) ?? error)
    }

  /**
   * One append alone, as the coalescer reports it: its committed events, or `undefined` when its
   * compare-and-set refused it (the caller reads why).
   */
  const appendAlone = (
    request: EventStore.StorableAppend
  ): Effect.Effect<CommittedEvents | undefined, SqlError.SqlError | EventStore.AppendError> =>
    appendStreamStatement(request).pipe(
      Effect.catchTag("SqlError", appendFailure([request])),
      Effect.flatMap((rows) => {
        if (rows.length === 0) return Effect.succeed(undefined)
        const row = appendRow(rows[0], request.streamId)
        return row instanceof StoreError ? Effect.fail(row) : Effect.succeed(row)
      })
    )

  /** {@link appendAlone}, its category marked (see `notifyCommitted`) when it committed. */
  const appendAloneNotified = (
    request: EventStore.StorableAppend
  ): Effect.Effect<CommittedEvents | undefined, SqlError.SqlError | EventStore.AppendError> =>
    Effect.tap(appendAlone(request), (committed) => (committed === undefined ? Effect.void : notifyCommitted([request.category])))

  /**
   * The outcome of one append: its committed events, or why its compare-and-set refused it (read
   * `under` the append's span).
   */
  const refusedOr =
    (request: EventStore.StorableAppend, under: UnderSpan = asIs) =>
    (committed: CommittedEvents | undefined): Effect.Effect<ReadonlyArray<CommittedEvents>, SqlError.SqlError | EventStore.AppendError> =>
      committed === undefined ? under(Effect.flatMap(conflictOf(request), Effect.fail)) : Effect.succeed([committed])

  const appendOnce = (
    requests: ReadonlyArray<EventStore.StorableAppend>
  ): Effect.Effect<ReadonlyArray<CommittedEvents>, SqlError.SqlError | EventStore.AppendError> => {
    if (requests.length === 1) return Effect.flatMap(appendAlone(requests[0]!), refusedOr(requests[0]!))
    return appendAllStatement(requests).pipe(
      Effect.catchTag("SqlError", appendFailure(requests)),
      Effect.flatMap((rows): Effect.Effect<ReadonlyArray<CommittedEvents>, StoreError> => {
        const byStream = new Map<string, CommittedEvents>()
        for (const raw of rows) {
          const row = appendRow(raw, undefined)
          if (row instanceof StoreError) return Effect.fail(row)
          byStream.set(row.streamId, row)
        }
        const committed: Array<CommittedEvents> = []
        for (const request of requests) {
          const row = byStream.get(request.streamId)
          if (row === undefined) return Effect.fail(appendRowFault(`no row for stream ${request.streamId}`))
          committed.push(row)
        }
        return Effect.succeed(committed)
      })
    )
  }

  type Coalesced = Coalesce.Outcome<CommittedEvents | undefined, SqlError.SqlError | EventStore.AppendError>

  /**
   * A batch of the coalescer: one `mire_append_each` statement, even for one append (its lock
   * waits end after 50 ms, migration 0022, so the worker never waits long for a stream row that
   * another transaction holds), its appends in stream-id order (so two statements lock streams in
   * one order). When the statement fails with an error of the server's (it rolled back: nothing
   * was written; a lock wait that timed out, a trigger of the user's), each append is run alone by
   * its own caller, in the caller's fiber, so each gets its own outcome and the worker is free at
   * once; when the connection failed, every append gets that failure.
   */
  const appendBatch = (requests: ReadonlyArray<EventStore.StorableAppend>): Effect.Effect<ReadonlyArray<Coalesced>> => {
    const order = requests.map((_, i) => i)
    order.sort((a, b) => {
      const x = requests[a]!.streamId
      const y = requests[b]!.streamId
      return x < y ? -1 : x > y ? 1 : a - b
    })
    const sorted = order.map((i) => requests[i]!)
    return appendEachStatement(sorted).pipe(
      Effect.flatMap((rows): Effect.Effect<ReadonlyArray<Coalesced>> => {
        const results: Array<Coalesced> = requests.map(() => Exit.succeed(undefined))
        // The categories of the appends that held, marked once for the statement (it committed).
        const committed = new Set<string>()
        for (const raw of rows) {
          const ord = Predicate.isRecord(raw) ? raw.ord : undefined
          const at = typeof ord === "number" && Number.isSafeInteger(ord) ? order[ord - 1] : undefined
          if (at === undefined) return Effect.succeed(requests.map(() => Exit.fail(appendRowFault("ord is not an index of the batch"))))
          const row = appendRow(raw, requests[at]!.streamId)
          results[at] = row instanceof StoreError ? Exit.fail(row) : Exit.succeed(row)
          committed.add(requests[at]!.category)
        }
        return committed.size === 0 ? Effect.succeed(results) : Effect.as(notifier.mark([...committed]), results)
      }),
      Effect.catchAll((error) =>
        Effect.succeed(
          sqlState(error) === undefined ? requests.map((): Coalesced => Exit.fail(error)) : requests.map((): Coalesced => Coalesce.alone)
        )
      )
    )
  }

  const coalescing = yield* Coalescing
  const coalescer =
    coalescing.statements > 0
      ? yield* Coalesce.make({ workers: coalescing.statements, max: coalescing.maxAppends, run: appendBatch, alone: appendAloneNotified })
      : undefined

  /**
   * One append through the coalescer (outside a transaction), or alone (inside one). An append
   * its statement could not decide (see `appendBatch`) runs alone here, in this fiber. Its
   * category is marked once it commits: by the coalescer's worker for the whole statement, or
   * here.
   */
  const appendCoalesced = (
    request: EventStore.StorableAppend,
    under: UnderSpan
  ): Effect.Effect<ReadonlyArray<CommittedEvents>, SqlError.SqlError | EventStore.AppendError> =>
    Effect.flatMap(inTransaction, (nested) =>
      nested || coalescer === undefined
        ? under(Effect.flatMap(appendAloneNotified(request), refusedOr(request)))
        : Effect.flatMap(coalescer.submit(request), refusedOr(request, under))
    )

  /**
   * The statements an append runs in its caller's fiber are children of its `EventStore.appendMany`
   * span (`span`, which is not in the context). A coalesced statement, shared by several callers,
   * is its worker's.
   */
  const append = (
    requests: ReadonlyArray<EventStore.StorableAppend>,
    span?: Tracer.AnySpan
  ): Effect.Effect<ReadonlyArray<CommittedEvents>, EventStore.AppendError> => {
    const under: UnderSpan = span === undefined ? asIs : (effect) => Effect.withParentSpan(effect, span)
    // Each append function is one statement, atomic on its own. Inside a transaction, a
    // statement that can raise (several streams, or an event id the caller gave, which may
    // already be stored) runs in a savepoint, so its refusal does not abort the caller's
    // transaction; a single stream's lost expectation raises nothing.
    const raises = requests.length > 1 || requests.some((r) => r.events.some((e) => e.eventIdGiven))
    const once = raises
      ? under(
          Effect.flatMap(inTransaction, (nested) => (nested ? transaction(appendOnce(requests)) : appendOnce(requests))).pipe(
            Effect.tap(() => notifyCommitted(categoriesOf(requests)))
          )
        )
      : appendCoalesced(requests[0]!, under)
    // `Any` can lose the race to create a stream; it has no expectation to violate, so it tries again.
    const retried = requests.some((r) => r.expected._tag === "Any")
      ? Effect.retry(once, {
          times: 3,
          while: (e) =>
            e._tag === "ConcurrencyConflict" && requests.some((r) => r.streamId === e.streamId && r.expected._tag === "Any")
        })
      : once
    return refail("append")(retried)
  }

  const readStreamPage = (streamId: string, from: number, direction: EventStore.Direction, limit: number) =>
    Execute.statement(execute, direction === "forward"
      ? sql`SELECT ${columns} FROM ${names.events} WHERE stream_id = ${streamId} AND stream_version >= ${from}
            ORDER BY stream_version LIMIT ${limit}`
      : sql`SELECT ${columns} FROM ${names.events} WHERE stream_id = ${streamId} AND stream_version <= ${from}
            ORDER BY stream_version DESC LIMIT ${limit}`
    ).pipe(refail("readStream"), Effect.flatMap(decodeEventRows))

  const headOf = (u: unknown): number => (typeof u === "number" ? u : 0)

  const stateOf = (u: unknown): EventStore.StreamState | undefined => (u === "deleted" || u === "archived" ? u : undefined)

  /**
   * The reads of one stream forward are functions of migrations 0021 (`mire_load_page`,
   * `mire_load_snapshot_page`) and 0023 (`mire_read_stream_rows`): their plans are kept for the
   * session, where an unnamed statement is parsed and planned on every call (more than a short
   * load costs).
   */
  const readRowsText = `SELECT * FROM ${names.qualify("mire_read_stream_rows")}($1, $2, $3)`
  const loadPageText = `SELECT * FROM ${names.qualify("mire_load_page")}($1, $2, $3)`
  const snapshotPageText = `SELECT * FROM ${names.qualify("mire_load_snapshot_page")}($1, $2)`

  /** A page of a stream's events and its stream row (version and state) as one statement saw them. */
  const pageOf = <A>(stream: unknown, events: Array<A>) =>
    // With no events the stream row is not read.
    events.length === 0 || !Predicate.isRecord(stream)
      ? { version: 0, events }
      : { version: headOf(stream.head), events, state: stateOf(stream.streamState) }

  // Whole events: the stream row first (its category, version and state), then the events without
  // what repeats (their stream id, which the read asked for; the stream's category; empty metadata).
  const loadPage: EventStore.Storage["loadPage"] = (streamId, from, limit, span) =>
    execute(readRowsText, [streamId, from, limit], span).pipe(
      refail("load"),
      Effect.flatMap((rows) => {
        const stream = rows[0]
        if (!Predicate.isRecord(stream)) return Effect.fail(corruptRow(0, stream === undefined ? "no row" : "is not an object"))
        const events = decodeEventRowsSync(rows, 1, knownStream(streamId, stream.category))
        return events instanceof StoreError ? Effect.fail(events) : Effect.succeed(pageOf(stream, events))
      })
    )

  // A load's page: only the columns a fold reads (the rest of each row would be sent and decoded for
  // nothing), with the stream's version and state on every row.
  const loadFoldPage: NonNullable<EventStore.Storage["loadFoldPage"]> = (streamId, from, limit, span) =>
    execute(loadPageText, [streamId, from, limit], span).pipe(
      refail("load"),
      Effect.flatMap((rows) => {
        const events = decodeFoldRowsSync(rows, streamId)
        return events instanceof StoreError ? Effect.fail(events) : Effect.succeed(pageOf(rows[0], events))
      })
    )

  // One statement: the snapshot (its state on the first row only), the stream's version, and the
  // events from the snapshot's version (the anchor) or from 1; one row of NULL events when there are none.
  const loadSnapshotPage = (streamId: StreamId.StreamId, limit: number, span?: Tracer.AnySpan) =>
    execute(snapshotPageText, [streamId, limit], span).pipe(
      refail("loadSnapshotted"),
      Effect.flatMap((rows): Effect.Effect<EventStore.SnapshotLoadPage, StoreError> => {
        const first = rows[0]
        if (!Predicate.isRecord(first)) return Effect.fail(corruptRow(0, first === undefined ? "no row" : "is not an object"))
        const events = first.streamVersion === null ? [] : decodeFoldRowsSync(rows, streamId)
        if (events instanceof StoreError) return Effect.fail(events)
        const snapshotAt = first.snapshotAt
        const snapshotVersion = first.snapshotVersion
        if (snapshotAt !== null && (typeof snapshotAt !== "number" || typeof snapshotVersion !== "number")) {
          return Effect.fail(corruptRow(0, "snapshot columns are not numbers"))
        }
        return Effect.succeed({
          version: events.length === 0 ? 0 : headOf(first.head),
          events,
          state: events.length === 0 ? undefined : stateOf(first.streamState),
          snapshot:
            typeof snapshotAt === "number" && typeof snapshotVersion === "number"
              ? Option.some({ streamId, streamVersion: snapshotAt, snapshotVersion, state: first.snapshotState })
              : Option.none()
        })
      })
    )

  const readLogPage = (
    categories: ReadonlyArray<string> | undefined,
    from: bigint,
    direction: EventStore.Direction,
    limit: number,
    excludeArchived = false
  ) => {
    // Archived streams left out by an anti-join on es_streams' primary key: a cost per event read, whatever
    // the number of archived streams (a NOT IN list would be re-read, or rescanned, for every page).
    const filter =
      categories === undefined
        ? sql`TRUE`
        : excludeArchived
          ? sql`category = ANY(${categories}) AND NOT EXISTS (
              SELECT 1 FROM ${names.streams} s WHERE s.stream_id = ${names.events}.stream_id AND s.archived_at IS NOT NULL)`
          : sql`category = ANY(${categories})`
    return Execute.statement(execute, direction === "forward"
      ? sql`SELECT ${columns} FROM ${names.events} WHERE ${filter} AND global_position >= ${from}
            ORDER BY global_position LIMIT ${limit}`
      : sql`SELECT ${columns} FROM ${names.events} WHERE ${filter} AND global_position <= ${from}
            ORDER BY global_position DESC LIMIT ${limit}`
    ).pipe(refail("readLog"), Effect.flatMap(decodeEventRows))
  }

  const streamVersion = (streamId: string) =>
    sql<{ version: number }>`SELECT version::float8 AS version FROM ${names.streams} WHERE stream_id = ${streamId}`.pipe(
      Effect.map((rows) => rows[0]?.version ?? 0),
      refail("streamVersion")
    )

  const lockStream = (streamId: string) =>
    sql<{ version: number }>`SELECT version::float8 AS version FROM ${names.streams} WHERE stream_id = ${streamId} FOR UPDATE`.pipe(
      Effect.map((rows) => rows[0]?.version ?? 0),
      refail("lockStream")
    )

  const currentTransactionId = sql<{ xid: string }>`SELECT pg_current_xact_id()::text AS xid`.pipe(
    Effect.map((rows) => BigInt(rows[0]!.xid)),
    refail("currentTransactionId")
  )

  const readSnapshot = (streamId: string) =>
    sql<{ stream_version: number; snapshot_version: number; state: unknown }>`
      SELECT stream_version::float8 AS stream_version, snapshot_version, state
      FROM ${names.snapshots} WHERE stream_id = ${streamId}`.pipe(
      Effect.map((rows) =>
        Option.map(
          Option.fromNullable(rows[0]),
          (row): StoredSnapshot => ({
            streamId,
            streamVersion: row.stream_version,
            snapshotVersion: row.snapshot_version,
            state: row.state
          })
        )
      ),
      refail("readSnapshot")
    )

  // Never below the stream's first kept version (a truncation's base), whose anchor event is gone: such
  // a write is skipped. KEY SHARE on the stream row waits for a truncation's FOR UPDATE (then re-reads
  // truncated_before), and does not block appends.
  const writeSnapshot = (snapshot: EventStore.StorableSnapshot) =>
    sql`
      INSERT INTO ${names.snapshots} AS kept (stream_id, stream_version, snapshot_version, state)
      SELECT ${snapshot.streamId}::text, ${snapshot.streamVersion}::bigint, ${snapshot.snapshotVersion}::integer, ${snapshot.stateJson}::jsonb
      WHERE coalesce(
        (SELECT st.truncated_before FROM ${names.streams} st WHERE st.stream_id = ${snapshot.streamId} FOR KEY SHARE), 1
      ) <= ${snapshot.streamVersion}::bigint
      ON CONFLICT (stream_id) DO UPDATE
        SET stream_version = excluded.stream_version, snapshot_version = excluded.snapshot_version,
            state = excluded.state, created_at = now()
        WHERE kept.snapshot_version <> excluded.snapshot_version
           OR kept.stream_version < excluded.stream_version`.pipe(
      Effect.asVoid,
      // A savepoint inside a scope: a failed snapshot write must not abort the caller's transaction.
      (write) => Effect.flatMap(inTransaction, (nested) => (nested ? transaction(write) : write)),
      refail("writeSnapshot")
    )

  return {
    append,
    readStreamPage,
    readLogPage,
    loadPage,
    loadFoldPage,
    loadSnapshotPage,
    streamVersion,
    lockStream,
    transaction,
    inTransaction,
    currentTransactionId,
    readSnapshot,
    writeSnapshot,
    setArchived: lifecycle.setArchived,
    deleteStream: lifecycle.deleteStream,
    ...Truncation.make(sql, names)
  }
})

/**
 * Builds the PostgreSQL `EventStore` with the given limits
 * (`EventStore.defaults` where not given).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeWith = (
  options: Partial<EventStore.Options>
): Effect.Effect<EventStore.EventStore, never, SqlClient.SqlClient | Scope.Scope> =>
  Effect.map(makeStorage, (storage) => EventStore.make(storage, options))

/**
 * Builds the PostgreSQL `EventStore`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<EventStore.EventStore, never, SqlClient.SqlClient | Scope.Scope> = makeWith({})

/**
 * The PostgreSQL `EventStore` layer with the given limits.
 *
 * @example
 * ```ts
 * import { PgEventStore } from "@mire/pg"
 *
 * // Refuses an event whose JSON data is larger than 64 KiB.
 * const EventStoreLive = PgEventStore.layerWith({ maxEventSize: 64 * 1024 })
 * ```
 * @since 0.1.0
 * @category layers
 */
export const layerWith = (
  options: Partial<EventStore.Options>
): Layer.Layer<EventStore.EventStore, never, SqlClient.SqlClient> =>
  Layer.scoped(EventStore.EventStore, makeWith(options)).pipe(Layer.provide(PgWakeups.localLayer))

/**
 * The PostgreSQL `EventStore` layer. Run {@link PgMigrations.migrate} once
 * at startup, before the first read or append.
 *
 * @example
 * ```ts
 * import { PgClient } from "@effect/sql-pg"
 * import { EventStore } from "@mire/core"
 * import { PgEventStore, PgMigrations } from "@mire/pg"
 * import { Effect, Redacted } from "effect"
 *
 * const program = EventStore.streamVersion("account-42")
 * const runnable = Effect.zipRight(PgMigrations.migrate(), program).pipe(
 *   Effect.provide(PgEventStore.layer),
 *   Effect.provide(PgClient.layer({ url: Redacted.make("postgres://localhost/app") }))
 * )
 * ```
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<EventStore.EventStore, never, SqlClient.SqlClient> = Layer.scoped(
  EventStore.EventStore,
  make
).pipe(Layer.provide(PgWakeups.localLayer))
