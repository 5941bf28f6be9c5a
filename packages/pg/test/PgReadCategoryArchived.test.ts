/**
 * A category read leaves archived streams out at a cost per event read, not
 * per archived stream: with many archived streams in the category, one page
 * reads a bounded number of es_streams rows (an anti-join on its primary
 * key), where a `NOT IN (archived ids)` list read every archived id for
 * every page (or rescanned it for every event, past `work_mem`).
 */
import { assert, describe, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as EventStore from "@mire/core/EventStore"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as PgStore from "../src/PgStore.js"
import { migratedLayer } from "./utils.js"

const archivedStreams = 20_000

describe("readCategory without archived streams", () => {
  layer(PgStore.layer.pipe(Layer.provideMerge(migratedLayer())), { timeout: "180 seconds", excludeTestServices: true })((it) => {
    it.effect(`reads a bounded number of stream rows per page, with ${archivedStreams} archived streams in the category`, () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        // 20k archived streams of one event each, then 1k live ones, all in category `arc`.
        yield* sql`INSERT INTO es_streams (stream_id, category, version, archived_at)
                   SELECT 'arc-old-' || i, 'arc', 1, now() FROM generate_series(1, ${archivedStreams}::int) i`
        yield* sql`INSERT INTO es_events (event_id, stream_id, stream_version, category, event_type, data)
                   SELECT gen_random_uuid(), 'arc-old-' || i, 1, 'arc', 'arc.e', '{}'::jsonb FROM generate_series(1, ${archivedStreams}::int) i`
        yield* sql`INSERT INTO es_streams (stream_id, category, version)
                   SELECT 'arc-live-' || i, 'arc', 1 FROM generate_series(1, 1000) i`
        yield* sql`INSERT INTO es_events (event_id, stream_id, stream_version, category, event_type, data)
                   SELECT gen_random_uuid(), 'arc-live-' || i, 1, 'arc', 'arc.e', '{}'::jsonb FROM generate_series(1, 1000) i`
        yield* sql`ANALYZE es_streams`
        yield* sql`ANALYZE es_events`
        // One page of 100, read backward (the live streams are the newest) in a transaction, so this backend's
        // transaction-local table statistics count exactly the rows that read touched.
        const { page, streamRows } = yield* EventStore.transaction(
          Effect.gen(function* () {
            const page = yield* Stream.runCollect(
              EventStore.readCategory("arc", { direction: "backward", limit: 100, pageSize: 100 })
            )
            const stats = yield* sql<{ tuples: string }>`
              SELECT (coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::text AS tuples
              FROM pg_stat_xact_user_tables WHERE relname = 'es_streams'`
            return { page: Chunk.toReadonlyArray(page), streamRows: Number(stats[0]?.tuples ?? "0") }
          })
        )
        assert.strictEqual(page.length, 100)
        assert.isTrue(page.every((e) => e.streamId.startsWith("arc-live-")))
        // An anti-join reads at most one es_streams row per event it reads; a list of archived ids reads 20k.
        assert.isBelow(streamRows, 1_000, `es_streams rows read for one page: ${streamRows}`)
      }))
  })
})
