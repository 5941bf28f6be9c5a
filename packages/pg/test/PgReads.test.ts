/**
 * The read path's cost in statements (issue 12) and its row decoder: a load
 * reads a stream in ⌈n / 10,000⌉ statements and stops at the version its first
 * read saw; a forward read ends at the stream's version without an empty page; `loadSnapshotted` is one statement; a corrupt row is a typed
 * error; `recordedAt` is the stored time to the millisecond.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as AggregateRoot from "@mire/core/AggregateRoot"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as StreamId from "@mire/core/StreamId"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { account, Deposited, Opened, unique } from "@mire/core/conformance"
import { decodeEventRows, decodeFoldRowsSync } from "../src/internal/rows.js"
import { counted } from "../../../test/statements.js"
import { storeLayer } from "./utils.js"


const deposits = (n: number) => Array.from({ length: n }, () => Deposited.make({ amount: 1 }))

describe("PgEventStore reads", () => {
  layer(storeLayer(), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.effect("a load reads ⌈n / 10,000⌉ statements: none to find out that a full last page was the end", () =>
      Effect.gen(function* () {
        const Account = account(unique("rdl"))
        for (const [id, n] of [["one", 1], ["k10", 10_000], ["k10plus", 10_001]] as const) {
          const root = AggregateRoot.record(AggregateRoot.make(Account, id), Opened.make({ owner: "o" }), ...deposits(n - 1))
          yield* EventStore.save(root)
          const [statements, loaded] = yield* counted(EventStore.load(Account, id))
          const state = Option.getOrThrow(loaded)
          assert.strictEqual(state.version, n, id)
          assert.strictEqual(state.state.balance, n - 1, id)
          assert.strictEqual(statements, Math.ceil(n / 10_000), id)
        }
        const [statements, missing] = yield* counted(EventStore.load(Account, "nobody"))
        assert.isTrue(Option.isNone(missing))
        assert.strictEqual(statements, 1)
      }))

    it.effect("a forward read of 2,000 events is 1 statement (the default first page is 10,000); a log read's pages grow", () =>
      Effect.gen(function* () {
        const streamId = `${unique("rdr")}-1`
        const category = streamId.split("-")[0]!
        const events = Array.from({ length: 2000 }, (_, i) => ({ eventType: "r.e", schemaVersion: 1, data: { i } }))
        yield* EventStore.append(streamId, category, ExpectedVersion.NoStream, events)
        const [statements, read] = yield* counted(Stream.runCollect(EventStore.readStream(streamId)))
        assert.deepStrictEqual(Chunk.toReadonlyArray(read).map((e) => e.data.i), events.map((e) => e.data.i))
        assert.strictEqual(statements, 1)
        // 2,500 events of a category: pages of 1,000 then 2,000 (the second short, so the last), not 3 of 1,000.
        yield* EventStore.append(`${category}-2`, category, ExpectedVersion.NoStream, events.slice(0, 500))
        const [logStatements, log] = yield* counted(Stream.runCollect(EventStore.readCategory(category)))
        assert.strictEqual(log.length, 2500)
        assert.strictEqual(logStatements, 2)
        const [short, tail] = yield* counted(Stream.runCollect(EventStore.readStream(streamId, { from: 1990, pageSize: 5 })))
        assert.deepStrictEqual(Chunk.toReadonlyArray(tail).map((e) => e.streamVersion), Array.from({ length: 11 }, (_, i) => 1990 + i))
        assert.strictEqual(short, 3)
      }))

    it.effect("a load of more than one page folds every page, and a later load sees the events appended since", () =>
      Effect.gen(function* () {
        const Account = account(unique("rdh"))
        yield* EventStore.save(AggregateRoot.record(AggregateRoot.make(Account, "1"), Opened.make({ owner: "o" }), ...deposits(10_499)))
        const loaded = Option.getOrThrow(yield* EventStore.load(Account, "1"))
        assert.strictEqual(loaded.version, 10_500)
        yield* EventStore.save(AggregateRoot.record(loaded, ...deposits(5)))
        const again = Option.getOrThrow(yield* EventStore.load(Account, "1"))
        assert.strictEqual(again.version, 10_505)
        assert.strictEqual(again.state.balance, 10_504)
      }))

    it.effect("loadSnapshotted is one statement: the snapshot, its anchor check and the tail (hit, miss, none)", () =>
      Effect.gen(function* () {
        const Account = account(unique("rds"), 1000)
        let root = AggregateRoot.record(AggregateRoot.make(Account, "1"), Opened.make({ owner: "o" }), ...deposits(1499))
        root = yield* EventStore.saveSnapshotting(root)
        root = yield* EventStore.save(AggregateRoot.record(root, ...deposits(3)))
        const [hit, snapped] = yield* counted(EventStore.loadSnapshotted(Account, "1"))
        assert.strictEqual(Option.getOrThrow(snapped).version, 1503)
        assert.strictEqual(Option.getOrThrow(snapped).state.balance, 1502)
        assert.strictEqual(hit, 1)
        // No snapshot yet: the same statement read the stream from its start.
        yield* EventStore.save(AggregateRoot.record(AggregateRoot.make(Account, "2"), Opened.make({ owner: "p" }), ...deposits(9)))
        const [miss, unsnapped] = yield* counted(EventStore.loadSnapshotted(Account, "2"))
        assert.strictEqual(Option.getOrThrow(unsnapped).state.balance, 9)
        assert.strictEqual(miss, 1)
        const [none, nothing] = yield* counted(EventStore.loadSnapshotted(Account, "nobody"))
        assert.isTrue(Option.isNone(nothing))
        assert.strictEqual(none, 1)
      }))

    it.effect("a corrupt row is a StoreError naming the row and field, whatever field is wrong", () =>
      Effect.gen(function* () {
        const good = {
          eventId: "00000000-0000-4000-8000-000000000000",
          streamId: "s-1",
          category: "s",
          streamVersion: 1,
          globalPosition: "7",
          transactionId: "9",
          eventType: "s.e",
          schemaVersion: 1,
          data: {},
          metadata: {},
          recordedAt: 1_700_000_000_123
        }
        const [ok] = yield* decodeEventRows([good])
        assert.strictEqual(ok!.globalPosition, 7n)
        assert.strictEqual(ok!.recordedAt.getTime(), 1_700_000_000_123)
        const corrupt: ReadonlyArray<readonly [string, unknown]> = [
          ["eventId", null],
          ["streamVersion", "1"],
          ["globalPosition", "1.5"],
          ["globalPosition", ""],
          ["globalPosition", "-"],
          ["globalPosition", " 1"],
          ["globalPosition", "1e3"],
          ["globalPosition", "+5"],
          ["globalPosition", "12345678901234567x"],
          ["globalPosition", 7],
          ["transactionId", "x"],
          ["data", []],
          ["data", "{}"],
          ["metadata", null],
          ["recordedAt", null]
        ]
        for (const [field, value] of corrupt) {
          const error = yield* Effect.flip(decodeEventRows([good, { ...good, [field]: value }]))
          assert.strictEqual(error._tag, "StoreError")
          assert.strictEqual(error.operation, "decode event row")
          assert.include(String(error.cause), `row 1: ${field}`)
        }
        for (const [key, value] of [["correlationId", 1], ["causationId", {}], ["custom", [1]]] as const) {
          const error = yield* Effect.flip(decodeEventRows([{ ...good, metadata: { [key]: value } }]))
          assert.include(String(error.cause), `metadata.${key}`)
        }
        // Unknown metadata keys are dropped, as the EventMetadata Schema does.
        const [dropped] = yield* decodeEventRows([{ ...good, metadata: { causationId: "c", extra: 1 } }])
        assert.deepStrictEqual(dropped!.metadata, { causationId: "c" })
        const [kept] = yield* decodeEventRows([{ ...good, metadata: { correlationId: "r", custom: { a: 1 } } }])
        assert.deepStrictEqual(kept!.metadata, { correlationId: "r", custom: { a: 1 } })
        // Positions past 15 digits (beyond a double's exact range) and negative ones stay exact.
        const [big] = yield* decodeEventRows([{ ...good, globalPosition: "9223372036854775807", transactionId: "-42" }])
        assert.strictEqual(big!.globalPosition, 9223372036854775807n)
        assert.strictEqual(big!.transactionId, -42n)
        const [fifteen] = yield* decodeEventRows([{ ...good, globalPosition: "999999999999999" }])
        assert.strictEqual(fifteen!.globalPosition, 999999999999999n)
        // A load's rows (only the columns a fold reads) are checked the same way.
        const fold = { streamVersion: 1, globalPosition: "7", eventType: "s.e", schemaVersion: 1, data: {} }
        assert.deepStrictEqual(decodeFoldRowsSync([fold], StreamId.fromStored("s-1")), [
          { streamId: StreamId.fromStored("s-1"), streamVersion: 1, globalPosition: 7n, eventType: "s.e", schemaVersion: 1, data: {} }
        ])
        for (const [field, value] of [
          ["streamVersion", "1"],
          ["globalPosition", "x"],
          ["eventType", 1],
          ["schemaVersion", null],
          ["data", []]
        ] as const) {
          const error = decodeFoldRowsSync([fold, { ...fold, [field]: value }], StreamId.fromStored("s-1"))
          assert.isFalse(Array.isArray(error), field)
          if (!Array.isArray(error)) {
            assert.strictEqual(error._tag, "StoreError")
            assert.include(String(error.cause), `row 1: ${field}`)
          }
        }
      }))

    it.effect("recordedAt is the stored time to the millisecond", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const streamId = `${unique("rdt")}-1`
        yield* EventStore.append(streamId, streamId.split("-")[0]!, ExpectedVersion.NoStream, [
          { eventType: "t.e", schemaVersion: 1, data: {} }
        ])
        const [event] = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readStream(streamId)))
        const rows = yield* sql<{ ms: string }>`
          SELECT (extract(epoch FROM date_trunc('milliseconds', recorded_at)) * 1000)::bigint::text AS ms
          FROM es_events WHERE stream_id = ${streamId}`
        assert.strictEqual(event!.recordedAt.getTime(), Number(rows[0]!.ms))
      }))
  })
})
