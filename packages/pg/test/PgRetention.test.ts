import { assert, describe, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import {
  account,
  Deposited,
  Opened,
  retentionSuite,
  truncationDeadLetterSuite,
  truncationStorageSuite,
  truncationSubscriptionSuite,
  unique
} from "@mire/core/conformance"
import * as PgDeadLetterStore from "../src/PgDeadLetterStore.js"
import * as PgEventStore from "../src/PgEventStore.js"
import * as AggregateRoot from "@mire/core/AggregateRoot"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as PgSubscriptionStore from "../src/PgSubscriptionStore.js"
import { pgRaw } from "./raw.js"
import { storeLayer } from "./utils.js"

const layerUnderTest = pgRaw.pipe(Layer.provideMerge(storeLayer()))

retentionSuite("postgres", layerUnderTest)
truncationSubscriptionSuite("postgres", PgSubscriptionStore.layer.pipe(Layer.provideMerge(layerUnderTest)))
truncationDeadLetterSuite("postgres", PgDeadLetterStore.layer.pipe(Layer.provideMerge(layerUnderTest)))
truncationStorageSuite("postgres", PgEventStore.makeStorage, layerUnderTest)

describe("truncation on PostgreSQL", () => {
  layer(layerUnderTest, { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.effect("the stream row records the new base, and appends racing a truncation all land", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const Account = account(unique("pt"), 5)
        const streamId = `${Account.category}-1`
        let root = AggregateRoot.record(AggregateRoot.make(Account, "1"), Opened.make({ owner: "o" }))
        for (let i = 0; i < 9; i++) root = AggregateRoot.record(root, Deposited.make({ amount: 1 }))
        root = yield* EventStore.saveSnapshotting(root)
        assert.strictEqual(root.version, 10)
        // 20 appends from their own connections while the stream is truncated before its snapshot (10).
        const deposit = yield* Account.codec.encodeAll([Deposited.make({ amount: 1 })])
        const appends = Effect.forEach(
          Array.from({ length: 20 }, (_, i) => i),
          () => EventStore.append(streamId, Account.category, ExpectedVersion.Any, deposit),
          { concurrency: 20 }
        )
        const [, cut] = yield* Effect.all([appends, EventStore.truncate(streamId, 10, { snapshotVersion: Account })], { concurrency: 2 })
        assert.deepStrictEqual(cut, { streamId, truncatedBefore: 10, removed: 9 })
        const rows = yield* sql<{ truncated_before: string; version: string }>`
          SELECT truncated_before::text, version::text FROM es_streams WHERE stream_id = ${streamId}`
        assert.deepStrictEqual(rows[0], { truncated_before: "10", version: "30" })
        const count = yield* sql<{ n: string }>`SELECT count(*)::text AS n FROM es_events WHERE stream_id = ${streamId}`
        assert.strictEqual(count[0]?.n, "21")
        const loaded = Option.getOrThrow(yield* EventStore.loadSnapshotted(Account, "1"))
        assert.strictEqual(loaded.version, 30)
        assert.strictEqual(loaded.state.balance, 29)
      }))

    it.scoped("a snapshot write racing a truncation waits for its row lock, then sees the new base and is skipped", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const storage = yield* PgEventStore.makeStorage
        const Account = account(unique("pw"), 8)
        const streamId = `${Account.category}-1`
        let root = AggregateRoot.record(AggregateRoot.make(Account, "1"), Opened.make({ owner: "o" }))
        for (let i = 0; i < 7; i++) root = AggregateRoot.record(root, Deposited.make({ amount: 1 }))
        root = yield* EventStore.saveSnapshotting(root)
        assert.strictEqual(root.version, 8)
        // A truncation in progress: the stream's row locked, its base raised to 8, not yet committed.
        const locked = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const truncation = yield* sql
          .withTransaction(
            Effect.gen(function* () {
              yield* sql`SELECT 1 FROM es_streams WHERE stream_id = ${streamId} FOR UPDATE`
              yield* sql`DELETE FROM es_events WHERE stream_id = ${streamId} AND stream_version < 8`
              yield* sql`UPDATE es_streams SET truncated_before = 8 WHERE stream_id = ${streamId}`
              yield* Deferred.succeed(locked, undefined)
              yield* Deferred.await(release)
            })
          )
          .pipe(Effect.fork)
        yield* Deferred.await(locked)
        // Meanwhile a process on snapshot version 2 writes the state it folded at v3 (from its own connection).
        const state = { owner: "o", balance: 2, open: true, events: 3 }
        const write = yield* Effect.fork(
          storage.writeSnapshot({ streamId, streamVersion: 3, snapshotVersion: 2, state, stateJson: JSON.stringify(state) })
        )
        // It waits for the row lock (polled with a deadline: it is still running while the truncation is open).
        const waiting = yield* sql<{ n: string }>`
          SELECT count(*)::text AS n FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FOR KEY SHARE%'`.pipe(
          Effect.filterOrFail((rows) => rows[0]?.n === "1", () => "not waiting yet"),
          Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo("20 seconds")))
        )
        assert.strictEqual(waiting[0]?.n, "1")
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(truncation)
        yield* Fiber.join(write)
        const rows = yield* sql<{ stream_version: string; snapshot_version: number }>`
          SELECT stream_version::text, snapshot_version FROM es_snapshots WHERE stream_id = ${streamId}`
        assert.deepStrictEqual(rows[0], { stream_version: "8", snapshot_version: 1 })
        assert.strictEqual(Option.getOrThrow(yield* EventStore.loadSnapshotted(Account, "1")).version, 8)
      }))
  })
})
