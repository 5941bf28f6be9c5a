/**
 * The reads of one stream forward go through migrations 0021's and 0023's functions,
 * whose plans PostgreSQL keeps for the session (an unnamed statement is
 * planned on every call): a load, a snapshotted load and a stream read are
 * each one call of their function, and their plans are generic.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as AggregateRoot from "@mire/core/AggregateRoot"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as StreamId from "@mire/core/StreamId"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { account, Deposited, Opened, unique } from "@mire/core/conformance"
import { decodeEventRow, decodeEventRowsSync, knownStream } from "../src/internal/rows.js"
import { storeLayer } from "./utils.js"
import { traced } from "../../../test/spans.js"

const readFunctions = ["mire_load_page", "mire_load_snapshot_page", "mire_read_stream_rows"] as const

describe("reads through functions: postgres", () => {
  layer(storeLayer(), { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.effect("load, loadSnapshotted and readStream each call their function once, in one statement", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const Account = account(unique("rf"), 2)
        const root = AggregateRoot.record(
          AggregateRoot.make(Account, "1"),
          Opened.make({ owner: "Ada" }),
          Deposited.make({ amount: 5 }),
          Deposited.make({ amount: 7 })
        )
        yield* EventStore.saveSnapshotting(root)
        const streamId = `${Account.category}-1`
        // Function calls counted in this transaction only (track_functions, on its one connection).
        const calls = yield* EventStore.transaction(
          Effect.gen(function* () {
            yield* sql`SET LOCAL track_functions = 'pl'`
            const loaded = yield* EventStore.load(Account, "1")
            const snapshotted = yield* EventStore.loadSnapshotted(Account, "1")
            const read = yield* Stream.runCollect(EventStore.readStream(streamId))
            assert.strictEqual(Option.getOrThrow(loaded).version, 3)
            assert.deepStrictEqual(Option.getOrThrow(snapshotted).state, Option.getOrThrow(loaded).state)
            assert.deepStrictEqual(
              [...read].map((e) => [e.streamId, e.streamVersion]),
              [
                [streamId, 1],
                [streamId, 2],
                [streamId, 3]
              ]
            )
            return yield* sql<{ readonly funcname: string; readonly calls: number }>`
              SELECT funcname, calls::int AS calls FROM pg_stat_xact_user_functions
              WHERE funcname IN ${sql.in(readFunctions)} ORDER BY funcname`
          })
        )
        assert.deepStrictEqual(
          calls.map((c) => [c.funcname, c.calls]),
          readFunctions.map((f) => [f, 1])
        )
      })
    )

    it.effect("the read functions keep generic plans and are pinned to their schema", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const rows = yield* sql<{ readonly proname: string; readonly config: ReadonlyArray<string> | null }>`
          SELECT proname, proconfig AS config FROM pg_proc WHERE proname IN ${sql.in(readFunctions)} ORDER BY proname`
        assert.deepStrictEqual(
          rows.map((r) => r.proname),
          [...readFunctions]
        )
        for (const row of rows) {
          assert.include(row.config ?? [], "plan_cache_mode=force_generic_plan", row.proname)
          assert.isTrue((row.config ?? []).some((c) => c.startsWith("search_path=")), row.proname)
        }
      })
    )

    it.effect("a load's and a snapshotted load's statements are children of their spans", () =>
      Effect.gen(function* () {
        const Account = account(unique("rt"), 2)
        yield* EventStore.saveSnapshotting(
          AggregateRoot.record(AggregateRoot.make(Account, "1"), Opened.make({ owner: "Ada" }), Deposited.make({ amount: 1 }))
        )
        const { spans } = yield* traced(Effect.zipRight(EventStore.load(Account, "1"), EventStore.loadSnapshotted(Account, "1")))
        const byId = new Map(spans.map((s) => [s.spanId, s]))
        const parentOf = (span: (typeof spans)[number] | undefined) =>
          span === undefined ? undefined : Option.getOrUndefined(Option.map(span.parent, (p) => byId.get(p.spanId)))
        const statements = spans.filter((s) => s.name === "sql.execute")
        // Each statement's parent, by name, and that span's stream id.
        assert.deepStrictEqual(
          statements.map((s) => [parentOf(s)?.name, parentOf(s)?.attributes.get("mire.stream_id")]),
          [
            ["EventStore.load", `${Account.category}-1`],
            ["EventStore.loadSnapshotted", `${Account.category}-1`]
          ]
        )
      })
    )

    it.effect("a snapshotted load's function: the snapshot state on the first row only; one row without events", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const Account = account(unique("rs"), 2)
        yield* EventStore.saveSnapshotting(
          AggregateRoot.record(AggregateRoot.make(Account, "1"), Opened.make({ owner: "Ada" }), Deposited.make({ amount: 1 }))
        )
        yield* EventStore.saveSnapshotting(
          AggregateRoot.record(
            Option.getOrThrow(yield* EventStore.load(Account, "1")),
            Deposited.make({ amount: 2 }),
            Deposited.make({ amount: 3 })
          )
        )
        // A tail after the snapshot at v4 (a plain save writes no snapshot).
        yield* EventStore.save(
          AggregateRoot.record(Option.getOrThrow(yield* EventStore.load(Account, "1")), Deposited.make({ amount: 4 }))
        )
        const page = yield* sql<{ readonly streamVersion: number | null; readonly snapshotState: unknown }>`
          SELECT "streamVersion", "snapshotState" FROM mire_load_snapshot_page(${`${Account.category}-1`}, 10)`
        assert.deepStrictEqual(
          page.map((r) => [r.streamVersion, r.snapshotState !== null]),
          [
            [4, true],
            [5, false]
          ]
        )
        const none = yield* sql<{ readonly streamVersion: number | null; readonly head: number | null }>`
          SELECT "streamVersion", head FROM mire_load_snapshot_page(${`${Account.category}-none`}, 10)`
        assert.deepStrictEqual(
          none.map((r) => [r.streamVersion, r.head]),
          [[null, null]]
        )
      })
    )

    it.effect("a stream read's function: the stream row first, then events without what repeats", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const category = unique("rr")
        const streamId = `${category}-1`
        yield* EventStore.append(streamId, category, ExpectedVersion.NoStream, [
          { eventType: "x", schemaVersion: 1, data: {} },
          { eventType: "x", schemaVersion: 1, data: {}, metadata: { correlationId: "c" } }
        ])
        yield* EventStore.append(streamId, "rrother", ExpectedVersion.Exact(2), [{ eventType: "x", schemaVersion: 1, data: {} }])
        const rows = yield* sql<{
          readonly eventId: string | null
          readonly category: string | null
          readonly streamVersion: number | null
          readonly metadata: unknown
          readonly head: number | null
          readonly streamState: string | null
        }>`SELECT "eventId", category, "streamVersion", metadata, head, "streamState"
           FROM mire_read_stream_rows(${streamId}, 1, 10)`
        assert.deepStrictEqual(
          rows.map((r) => [r.eventId === null, r.category, r.streamVersion, r.metadata, r.head, r.streamState]),
          [
            [true, category, null, null, 3, null],
            [false, null, 1, null, null, null],
            [false, null, 2, { correlationId: "c" }, null, null],
            [false, "rrother", 3, null, null, null]
          ]
        )
        // No stream row: one row of NULLs.
        const none = yield* sql<{ readonly category: string | null; readonly head: number | null }>`
          SELECT category, head FROM mire_read_stream_rows(${`${category}-none`}, 1, 10)`
        assert.deepStrictEqual(
          none.map((r) => [r.category, r.head]),
          [[null, null]]
        )
      })
    )
  })
})

describe("event rows of one stream's read", () => {
  const row = {
    eventId: "0190a000-0000-7000-8000-000000000001",
    category: "acct",
    streamVersion: 1,
    globalPosition: "7",
    transactionId: "9",
    eventType: "acct.opened",
    schemaVersion: 1,
    data: {},
    metadata: {},
    recordedAt: 0
  }

  it.effect("decode with what the read knows of its stream: the rows need not carry it", () =>
    Effect.sync(() => {
      const known = knownStream(StreamId.fromStored("acct-1"), "acct")
      const bare = { ...row, category: null, metadata: null }
      const event = decodeEventRow(bare, known)
      assert.isFalse(typeof event === "string")
      if (typeof event !== "string") {
        assert.strictEqual(event.streamId, "acct-1")
        assert.strictEqual(event.category, "acct")
        assert.strictEqual(event.aggregateId, "1")
        assert.deepStrictEqual(event.metadata, {})
      }
      // A category or metadata the row carries is kept.
      const own = decodeEventRow({ ...row, category: "other", metadata: { correlationId: "c" } }, known)
      assert.isTrue(typeof own !== "string" && own.category === "other" && own.metadata.correlationId === "c")
      // Without it, a row without `streamId`, or with NULL category or metadata, is corrupt.
      assert.strictEqual(decodeEventRow(row), "streamId is not a string")
      assert.strictEqual(decodeEventRow({ ...bare, streamId: "acct-1" }), "category is not a string")
      assert.strictEqual(decodeEventRow({ ...row, streamId: "acct-1", metadata: null }), "metadata is not a JSON object")
      // Nor does the stream's category stand in for a category that is not a string.
      assert.strictEqual(decodeEventRow({ ...row, category: 7 }, known), "category is not a string")
      assert.strictEqual(decodeEventRow(bare, knownStream(known.streamId, null)), "category is not a string")
      const decoded = decodeEventRowsSync([row, bare], 1, known)
      assert.isTrue(Array.isArray(decoded) && decoded.length === 1 && decoded[0]!.streamId === "acct-1")
    })
  )
})
