/**
 * The PostgreSQL event store: the `EventStore` service over `@effect/sql`'s
 * `SqlClient`.
 *
 * - An append is one statement per batch (`mire_append`, a function so its
 *   plan is prepared once per session): a compare-and-set on the stream rows
 *   and an `unnest` insert of every event, so a version conflict is seen at
 *   statement time (never at COMMIT) and a losing writer writes nothing.
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
import { ConcurrencyConflict, type InvalidInput, StoreError } from "@mire/core/EventStoreError"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import type { CommittedEvents } from "@mire/core/RecordedEvent"
import type { StoredSnapshot } from "@mire/core/Snapshot"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { refail, sqlState } from "./internal/errors.js"
import { corruptRow, decodeEventRows, decodeEventRowsSync, eventColumns } from "./internal/rows.js"
import { AfterCommit, transaction as transactionWith } from "./internal/transaction.js"
import * as PgWakeups from "./PgWakeups.js"

/**
 * Applies mire's migrations (the same function as `PgMigrations.migrate`).
 *
 * @since 0.1.0
 */
export { migrate } from "./PgMigrations.js"

/**
 * The channel appends notify on (payload: the category).
 *
 * @since 0.1.0
 */
export const channel = "mire_events"

const kindOf = (expected: ExpectedVersion.ExpectedVersion): string =>
  expected._tag === "Any"
    ? "any"
    : expected._tag === "NoStream" || (expected._tag === "Exact" && expected.version === 0)
      ? "none"
      : expected._tag === "StreamExists"
        ? "exists"
        : "exact"

/** Backoff of a failed NOTIFY (retried with the same categories; later ones wait for the next). */
const notifyRetry = Schedule.exponential("50 millis").pipe(Schedule.union(Schedule.spaced("2 seconds")))

/**
 * The coalescing notifier of one store layer: `mark` wakes this process's
 * subscribers (through `hub`, when there is one) and marks the categories
 * dirty; one fiber, living in the current scope, sends every dirty category
 * in one `pg_notify` statement, at most one in flight.
 */
const makeNotifier = (sql: SqlClient.SqlClient, hub: Option.Option<PubSub.PubSub<PgWakeups.Wakeup>>) =>
  Effect.gen(function* () {
    const dirty = yield* Ref.make<ReadonlySet<string>>(new Set())
    const signal = yield* Queue.sliding<void>(1)
    const send = Queue.take(signal).pipe(
      Effect.zipRight(Ref.getAndSet(dirty, new Set())),
      Effect.flatMap((categories) =>
        categories.size === 0
          ? Effect.void
          : // Its own transaction writes nothing to keep: committing it without waiting for the WAL
            // flush spares the appends' flushes (delivery is the same; notifications are never durable).
            sql`SELECT pg_notify(${channel}, c), set_config('synchronous_commit', 'off', true)
                FROM unnest(${[...categories]}::text[]) AS c`.pipe(
              Effect.tapError((error) => Effect.logWarning(`mire: notifying ${channel} failed (${error.message}); retrying`)),
              Effect.retry(notifyRetry),
              Effect.asVoid
            )
      )
    )
    yield* Effect.forkScoped(Effect.repeat(send, Schedule.forever))
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
          Effect.zipRight(
            Ref.update(dirty, (now) => new Set([...now, ...categories])),
            Effect.asVoid(Queue.offer(signal, undefined))
          )
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
  const columns = sql.literal(eventColumns)
  const notifier = yield* makeNotifier(sql, yield* Effect.serviceOption(PgWakeups.LocalWakeups))

  /**
   * After an append: outside a transaction it has committed, so mark its categories; inside
   * `EventStore.transaction`, mark them once that commits; inside a transaction mire did not
   * open (no commit hook), NOTIFY within it (delivered when it commits).
   */
  const notifyCommitted = (categories: ReadonlyArray<string>) =>
    Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (connection) =>
      Option.isNone(connection)
        ? notifier.mark(categories)
        : Effect.flatMap(Effect.serviceOption(AfterCommit), (hooks) =>
            Option.isSome(hooks)
              ? hooks.value.register(notifier.mark(categories))
              : Effect.asVoid(sql`SELECT pg_notify(${channel}, c) FROM unnest(${categories}::text[]) AS c`)
          )
    )

  const inTransaction = Effect.map(Effect.serviceOption(SqlClient.TransactionConnection), Option.isSome)

  const transaction = transactionWith(sql)

  interface CasRow {
    readonly stream_id: string
    readonly first_version: number
    readonly last_version: number
    readonly first_position: string
    readonly last_position: string
    readonly transaction_id: string
  }

  const appendStatement = (requests: ReadonlyArray<EventStore.StorableAppend>) => {
    const streamIds: Array<string> = []
    const categories: Array<string> = []
    const kinds: Array<string> = []
    const expected: Array<number> = []
    const counts: Array<number> = []
    const eventIds: Array<string> = []
    const eventStreams: Array<string> = []
    const indexes: Array<number> = []
    const types: Array<string> = []
    const schemaVersions: Array<number> = []
    const data: Array<string> = []
    const metadata: Array<string> = []
    for (const request of requests) {
      streamIds.push(request.streamId)
      categories.push(request.category)
      kinds.push(kindOf(request.expected))
      expected.push(request.expected._tag === "Exact" ? request.expected.version : 0)
      counts.push(request.events.length)
      for (let i = 0; i < request.events.length; i++) {
        const event = request.events[i]!
        eventIds.push(event.eventId)
        eventStreams.push(request.streamId)
        indexes.push(i + 1)
        types.push(event.eventType)
        schemaVersions.push(event.schemaVersion)
        data.push(event.dataJson)
        metadata.push(event.metadataJson)
      }
    }
    return sql<CasRow>`
      SELECT * FROM mire_append(
        ${streamIds}::text[], ${categories}::text[], ${kinds}::text[], ${expected}::int8[], ${counts}::int8[],
        ${eventIds}::uuid[], ${eventStreams}::text[], ${indexes}::int8[], ${types}::text[],
        ${schemaVersions}::int4[], ${data}::jsonb[], ${metadata}::jsonb[])`
  }

  const conflictFor = (requests: ReadonlyArray<EventStore.StorableAppend>, written: ReadonlySet<string>) =>
    Effect.gen(function* () {
      const failed = requests.filter((r) => !written.has(r.streamId))
      const rows = yield* sql<{ stream_id: string; version: number }>`
        SELECT stream_id, version::float8 AS version FROM es_streams WHERE stream_id = ANY(${failed.map((r) => r.streamId)})`
      const versions = new Map(rows.map((row) => [row.stream_id, row.version]))
      const first = failed[0]!
      const actual = versions.get(first.streamId) ?? 0
      return new ConcurrencyConflict({
        streamId: first.streamId,
        expected: ExpectedVersion.format(first.expected),
        actual: actual === 0 ? null : actual
      })
    })

  /** The event id of a unique violation on `es_events_event_id_key`, if that is what `error` is. */
  const duplicateId = (error: SqlError.SqlError): string | undefined => {
    const cause = error.cause
    if (sqlState(error) !== "23505" || !Predicate.hasProperty(cause, "constraint")) return undefined
    if (cause.constraint !== "es_events_event_id_key") return undefined
    const detail = Predicate.hasProperty(cause, "detail") && typeof cause.detail === "string" ? cause.detail : ""
    return /\(event_id\)=\(([0-9a-f-]+)\)/.exec(detail)?.[1] ?? ""
  }

  const appendOnce = (requests: ReadonlyArray<EventStore.StorableAppend>) =>
    Effect.gen(function* () {
      const rows = yield* appendStatement(requests).pipe(
        Effect.catchTag("SqlError", (error): Effect.Effect<never, SqlError.SqlError | InvalidInput> => {
          const id = duplicateId(error)
          return id === undefined ? Effect.fail(error) : Effect.fail(EventStore.duplicateEventId(requests, id))
        })
      )
      const byStream = new Map(rows.map((row) => [row.stream_id, row]))
      if (byStream.size < requests.length) return yield* Effect.flatMap(conflictFor(requests, new Set(byStream.keys())), Effect.fail)
      return requests.map((request): CommittedEvents => {
        const row = byStream.get(request.streamId)!
        return {
          streamId: row.stream_id,
          firstVersion: row.first_version,
          lastVersion: row.last_version,
          firstPosition: BigInt(row.first_position),
          lastPosition: BigInt(row.last_position),
          transactionId: BigInt(row.transaction_id)
        }
      })
    })

  const append = (
    requests: ReadonlyArray<EventStore.StorableAppend>
  ): Effect.Effect<ReadonlyArray<CommittedEvents>, ConcurrencyConflict | InvalidInput | StoreError> => {
    // One statement is atomic on its own; several streams need a transaction
    // (a savepoint when nested) so that one conflict undoes the others. A caller-given
    // event id may already be stored: inside a transaction, a savepoint keeps that refusal
    // from aborting the caller's transaction.
    const givenIds = requests.some((r) => r.events.some((e) => e.eventIdGiven))
    const once =
      requests.length > 1
        ? transaction(appendOnce(requests))
        : givenIds
          ? Effect.flatMap(inTransaction, (nested) => (nested ? transaction(appendOnce(requests)) : appendOnce(requests)))
          : appendOnce(requests)
    return once.pipe(
      // `Any` can lose the race to create a stream (the insert sees the row only after our
      // snapshot); it has no expectation to violate, so it tries again.
      Effect.retry({
        times: 3,
        while: (e) =>
          e._tag === "ConcurrencyConflict" &&
          requests.some((r) => r.streamId === e.streamId && r.expected._tag === "Any")
      }),
      Effect.tap(() => notifyCommitted([...new Set(requests.map((r) => r.category))])),
      refail("append")
    )
  }

  const readStreamPage = (streamId: string, from: number, direction: EventStore.Direction, limit: number) =>
    (direction === "forward"
      ? sql`SELECT ${columns} FROM es_events WHERE stream_id = ${streamId} AND stream_version >= ${from}
            ORDER BY stream_version LIMIT ${limit}`
      : sql`SELECT ${columns} FROM es_events WHERE stream_id = ${streamId} AND stream_version <= ${from}
            ORDER BY stream_version DESC LIMIT ${limit}`
    ).pipe(refail("readStream"), Effect.flatMap(decodeEventRows))

  const headOf = (u: unknown): number => (typeof u === "number" ? u : 0)

  const loadPage = (streamId: string, from: number, limit: number) =>
    sql<{ readonly head: unknown }>`
      SELECT ${columns}, (SELECT version FROM es_streams WHERE stream_id = ${streamId})::float8 AS "head"
      FROM es_events WHERE stream_id = ${streamId} AND stream_version >= ${from}
      ORDER BY stream_version LIMIT ${limit}`.pipe(
      refail("load"),
      Effect.flatMap((rows) => {
        const events = decodeEventRowsSync(rows)
        return events instanceof StoreError
          ? Effect.fail(events)
          : Effect.succeed<EventStore.LoadPage>({ version: events.length === 0 ? 0 : headOf(rows[0]!.head), events })
      })
    )

  interface SnapshotRow {
    readonly eventId: unknown
    readonly head: unknown
    readonly snapshotAt: unknown
    readonly snapshotVersion: unknown
    readonly snapshotState: unknown
  }

  // One statement: the snapshot (its state on the first row only), the stream's version, and the
  // events from the snapshot's version (the anchor) or from 1; one row of NULL events when there are none.
  const loadSnapshotPage = (streamId: string, limit: number) =>
    sql<SnapshotRow>`
      SELECT e.*, (SELECT version FROM es_streams WHERE stream_id = ${streamId})::float8 AS "head",
        sn.stream_version::float8 AS "snapshotAt", sn.snapshot_version AS "snapshotVersion",
        CASE WHEN row_number() OVER (ORDER BY e."streamVersion") = 1 THEN sn.state END AS "snapshotState"
      FROM (SELECT 1) AS one
      LEFT JOIN es_snapshots sn ON sn.stream_id = ${streamId}
      LEFT JOIN LATERAL (
        SELECT ${columns} FROM es_events
        WHERE stream_id = ${streamId} AND stream_version >= COALESCE(sn.stream_version, 1)
        ORDER BY stream_version LIMIT ${limit}) e ON true
      ORDER BY e."streamVersion"`.pipe(
      refail("loadSnapshotted"),
      Effect.flatMap((rows): Effect.Effect<EventStore.SnapshotLoadPage, StoreError> => {
        const first = rows[0]
        if (first === undefined) return Effect.fail(corruptRow(0, "no row"))
        const events = first.eventId === null ? [] : decodeEventRowsSync(rows)
        if (events instanceof StoreError) return Effect.fail(events)
        const snapshotAt = first.snapshotAt
        const snapshotVersion = first.snapshotVersion
        if (snapshotAt !== null && (typeof snapshotAt !== "number" || typeof snapshotVersion !== "number")) {
          return Effect.fail(corruptRow(0, "snapshot columns are not numbers"))
        }
        return Effect.succeed({
          version: events.length === 0 ? 0 : headOf(first.head),
          events,
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
    limit: number
  ) => {
    const filter = categories === undefined ? sql`TRUE` : sql`category = ANY(${categories})`
    return (direction === "forward"
      ? sql`SELECT ${columns} FROM es_events WHERE ${filter} AND global_position >= ${from}
            ORDER BY global_position LIMIT ${limit}`
      : sql`SELECT ${columns} FROM es_events WHERE ${filter} AND global_position <= ${from}
            ORDER BY global_position DESC LIMIT ${limit}`
    ).pipe(refail("readLog"), Effect.flatMap(decodeEventRows))
  }

  const streamVersion = (streamId: string) =>
    sql<{ version: number }>`SELECT version::float8 AS version FROM es_streams WHERE stream_id = ${streamId}`.pipe(
      Effect.map((rows) => rows[0]?.version ?? 0),
      refail("streamVersion")
    )

  const lockStream = (streamId: string) =>
    sql<{ version: number }>`SELECT version::float8 AS version FROM es_streams WHERE stream_id = ${streamId} FOR UPDATE`.pipe(
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
      FROM es_snapshots WHERE stream_id = ${streamId}`.pipe(
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

  const writeSnapshot = (snapshot: EventStore.StorableSnapshot) =>
    sql`
      INSERT INTO es_snapshots (stream_id, stream_version, snapshot_version, state)
      VALUES (${snapshot.streamId}, ${snapshot.streamVersion}, ${snapshot.snapshotVersion}, ${snapshot.stateJson}::jsonb)
      ON CONFLICT (stream_id) DO UPDATE
        SET stream_version = excluded.stream_version, snapshot_version = excluded.snapshot_version,
            state = excluded.state, created_at = now()
        WHERE es_snapshots.snapshot_version <> excluded.snapshot_version
           OR es_snapshots.stream_version < excluded.stream_version`.pipe(
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
    loadSnapshotPage,
    streamVersion,
    lockStream,
    transaction,
    inTransaction,
    currentTransactionId,
    readSnapshot,
    writeSnapshot
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
 * PgEventStore.layerWith({ maxEventSize: 64 * 1024 })
 * @since 0.1.0
 * @category layers
 */
export const layerWith = (
  options: Partial<EventStore.Options>
): Layer.Layer<EventStore.EventStore, never, SqlClient.SqlClient> =>
  Layer.scoped(EventStore.EventStore, makeWith(options)).pipe(Layer.provide(PgWakeups.localLayer))

/**
 * The PostgreSQL `EventStore` layer. Run {@link PgMigrations.migrate} once
 * at startup (or use `layerMigrated`).
 *
 * @example
 * program.pipe(Effect.provide(PgEventStore.layer), Effect.provide(PgClient.layer({ url })))
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<EventStore.EventStore, never, SqlClient.SqlClient> = Layer.scoped(
  EventStore.EventStore,
  make
).pipe(Layer.provide(PgWakeups.localLayer))
