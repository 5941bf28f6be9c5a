/**
 * The PostgreSQL event store: the `EventStore` service over `@effect/sql`'s
 * `SqlClient`.
 *
 * - An append is one statement per batch (`mire_append`, a function so its
 *   plan is prepared once per session): a compare-and-set on the stream rows
 *   and an `unnest` insert of every event, so a version conflict is seen at
 *   statement time (never at COMMIT) and a losing writer writes nothing.
 * - It notifies `mire_events` inside the appending transaction, so waiting
 *   subscriptions wake when it commits.
 * - Transactions are ambient: inside `EventStore.transaction` every store
 *   call and every `sql` statement of the program share one connection.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlError from "@effect/sql/SqlError"
import * as EventStore from "@mire/core/EventStore"
import { ConcurrencyConflict, type InvalidInput, type StoreError } from "@mire/core/EventStoreError"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import type { CommittedEvents } from "@mire/core/RecordedEvent"
import type { StoredSnapshot } from "@mire/core/Snapshot"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import { refail, sqlState } from "./internal/errors.js"
import { decodeEventRows, eventColumns } from "./internal/rows.js"
import { transaction as transactionWith } from "./internal/transaction.js"

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

/**
 * The storage primitives over a `SqlClient`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeStorage: Effect.Effect<EventStore.Storage, never, SqlClient.SqlClient> = Effect.gen(function* () {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const columns = sql.literal(eventColumns)

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
): Effect.Effect<EventStore.EventStore, never, SqlClient.SqlClient> =>
  Effect.map(makeStorage, (storage) => EventStore.make(storage, options))

/**
 * Builds the PostgreSQL `EventStore`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<EventStore.EventStore, never, SqlClient.SqlClient> = makeWith({})

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
): Layer.Layer<EventStore.EventStore, never, SqlClient.SqlClient> => Layer.effect(EventStore.EventStore, makeWith(options))

/**
 * The PostgreSQL `EventStore` layer. Run {@link PgMigrations.migrate} once
 * at startup (or use `layerMigrated`).
 *
 * @example
 * program.pipe(Effect.provide(PgEventStore.layer), Effect.provide(PgClient.layer({ url })))
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<EventStore.EventStore, never, SqlClient.SqlClient> = Layer.effect(
  EventStore.EventStore,
  make
)
