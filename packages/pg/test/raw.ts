import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { Raw, TxReadModel } from "@mire/core/conformance"

/** Raw row access for the Postgres store (plain SQL, as an operator or older code would write). */
export const pgRaw = Layer.effect(
  Raw,
  Effect.map(SqlClient.SqlClient, (sql) =>
    Raw.of({
      setData: (streamId, version, data) =>
        sql`UPDATE es_events SET data = ${JSON.stringify(data)}::jsonb WHERE stream_id = ${streamId} AND stream_version = ${version}`.pipe(
          Effect.orDie,
          Effect.asVoid
        ),
      setType: (streamId, version, eventType, schemaVersion) =>
        sql`UPDATE es_events SET event_type = ${eventType}, schema_version = ${schemaVersion}
            WHERE stream_id = ${streamId} AND stream_version = ${version}`.pipe(Effect.orDie, Effect.asVoid),
      deleteEvent: (streamId, version) =>
        sql`DELETE FROM es_events WHERE stream_id = ${streamId} AND stream_version = ${version}`.pipe(
          Effect.orDie,
          Effect.asVoid
        ),
      insert: (row) =>
        sql`WITH s AS (
              INSERT INTO es_streams (stream_id, category, version) VALUES (${row.streamId}, ${row.category}, ${row.version})
              ON CONFLICT (stream_id) DO UPDATE SET version = GREATEST(es_streams.version, excluded.version))
            INSERT INTO es_events (event_id, stream_id, stream_version, category, event_type, schema_version, data)
            VALUES (gen_random_uuid(), ${row.streamId}, ${row.version}, ${row.category}, ${row.eventType},
                    ${row.schemaVersion}, ${JSON.stringify(row.data)}::jsonb)`.pipe(Effect.orDie, Effect.asVoid),
      setSnapshot: (streamId, streamVersion, snapshotVersion, state) =>
        sql`INSERT INTO es_snapshots (stream_id, stream_version, snapshot_version, state)
            VALUES (${streamId}, ${streamVersion}, ${snapshotVersion}, ${JSON.stringify(state)}::jsonb)
            ON CONFLICT (stream_id) DO UPDATE SET stream_version = excluded.stream_version,
              snapshot_version = excluded.snapshot_version, state = excluded.state`.pipe(Effect.orDie, Effect.asVoid),
      count: sql<{ n: number }>`SELECT count(*)::float8 AS n FROM es_events`.pipe(
        Effect.map((rows) => rows[0]!.n),
        Effect.orDie
      )
    })
  )
)

/** A transactional read model in Postgres: a plain table (no unique key, so a duplicate would show). */
export const pgReadModel = Layer.effect(
  TxReadModel,
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE IF NOT EXISTS tx_read_model (key text NOT NULL)`.pipe(Effect.orDie)
    return TxReadModel.of({
      insert: (key) => sql`INSERT INTO tx_read_model (key) VALUES (${key})`.pipe(Effect.orDie, Effect.asVoid),
      rows: (prefix) =>
        sql<{ key: string }>`SELECT key FROM tx_read_model WHERE starts_with(key, ${prefix})`.pipe(
          Effect.map((rows) => rows.map((r) => r.key)),
          Effect.orDie
        )
    })
  })
)
