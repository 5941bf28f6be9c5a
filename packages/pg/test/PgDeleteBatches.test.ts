/**
 * Deleting a big stream on PostgreSQL runs in short transactions: the
 * stream is marked deleted first (appends refused from then on), its events
 * go 1,000 at a time with `truncated_before` raised in the same transaction
 * (subscriptions move past them, never see a gap), and the last transaction
 * writes the tombstone. A deletion interrupted half-way is finished by the
 * next `deleteStream`.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { collectUntil } from "@mire/core/conformance"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Subscription from "@mire/core/Subscription"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as PgStore from "../src/PgStore.js"
import { migratedLayer } from "./utils.js"

const ev = (i: number) => ({ eventType: "big.e", schemaVersion: 1, data: { i } })

const appendMany = (streamId: string, category: string, count: number) =>
  Effect.forEach(
    Array.from({ length: Math.ceil(count / 500) }, (_, chunk) => chunk),
    (chunk) =>
      EventStore.append(
        streamId,
        category,
        chunk === 0 ? ExpectedVersion.NoStream : ExpectedVersion.Exact(chunk * 500),
        Array.from({ length: Math.min(500, count - chunk * 500) }, (_, i) => ev(chunk * 500 + i + 1))
      ),
    { discard: true }
  )

const streamRow = (streamId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ version: number; truncated_before: number; deleted: boolean }>`
      SELECT version::int AS version, truncated_before::int AS truncated_before, deleted_at IS NOT NULL AS deleted
      FROM es_streams WHERE stream_id = ${streamId}`.pipe(Effect.map((rows) => rows[0]))
  )

describe("deleting a big stream", () => {
  layer(PgStore.layer.pipe(Layer.provideMerge(migratedLayer())), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.effect("removes its events in transactions of at most 1,000, then writes the tombstone, as before", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* appendMany("big-1", "big", 2_500)
        // Every DELETE on es_events records its transaction and how many rows it removed.
        yield* sql`CREATE TABLE delete_log (xid xid8, removed int)`
        yield* sql.unsafe(`CREATE FUNCTION log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN INSERT INTO delete_log SELECT pg_current_xact_id(), count(*) FROM gone; RETURN NULL; END $$`)
        yield* sql.unsafe(`CREATE TRIGGER log_delete AFTER DELETE ON es_events REFERENCING OLD TABLE AS gone
          FOR EACH STATEMENT EXECUTE FUNCTION log_delete()`)
        yield* EventStore.deleteStream("big-1")
        const log = yield* sql<{ xid: string; removed: number }>`
          SELECT xid::text AS xid, sum(removed)::int AS removed FROM delete_log GROUP BY xid ORDER BY xid`
        assert.deepStrictEqual(
          log.map((row) => row.removed),
          [1000, 1000, 500]
        )
        yield* sql`DROP TRIGGER log_delete ON es_events`
        // The same end state as a one-statement deletion: the tombstone alone, at the old version plus one.
        assert.deepStrictEqual(yield* streamRow("big-1"), { version: 2_501, truncated_before: 2_501, deleted: true })
        const left = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readStream("big-1")))
        assert.deepStrictEqual(
          left.map((e) => [e.streamVersion, e.eventType, e.data]),
          [[2_501, EventStore.streamDeletedType, { deletedVersion: 2_500 }]]
        )
        const refused = yield* Effect.flip(EventStore.append("big-1", "big", ExpectedVersion.Any, [ev(0)]))
        assert.strictEqual(refused._tag, "StreamDeleted")
        // Deleting it again changes nothing.
        yield* EventStore.deleteStream("big-1")
        assert.deepStrictEqual(yield* streamRow("big-1"), { version: 2_501, truncated_before: 2_501, deleted: true })
      }))

    it.scoped("half-way, it is deleted (appends refused) and subscriptions see no gap; the next delete finishes it", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* appendMany("half-1", "half", 1_500)
        // One step, as a deletion interrupted after its first transaction leaves it.
        yield* sql.unsafe(`SELECT * FROM mire_delete_stream('half-1', gen_random_uuid(), '$StreamDeleted', 1000)`)
        assert.deepStrictEqual(yield* streamRow("half-1"), { version: 1_501, truncated_before: 1_001, deleted: true })
        const refused = yield* Effect.flip(EventStore.append("half-1", "half", ExpectedVersion.Any, [ev(0)]))
        assert.strictEqual(refused._tag, "StreamDeleted")
        // A subscription from the start moves past the removed versions (no MissingVersion): v1001-v1500.
        const sub = yield* Subscription.make({ subscriptionId: "half-sub", categories: ["half"] })
        const before = yield* collectUntil(sub, (got) => got.length >= 500)
        assert.deepStrictEqual([before[0]?.streamVersion, before.at(-1)?.streamVersion], [1_001, 1_500])
        yield* EventStore.deleteStream("half-1")
        const after = yield* collectUntil(sub, (got) => got.length >= 1)
        assert.deepStrictEqual(
          after.map((e) => [e.streamVersion, e.eventType]),
          [[1_501, EventStore.streamDeletedType]]
        )
        assert.deepStrictEqual(yield* streamRow("half-1"), { version: 1_501, truncated_before: 1_501, deleted: true })
      }))
  })
})
