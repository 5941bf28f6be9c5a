/**
 * How an append sends its events' JSON (issue 12): the texts of a batch go as
 * one newline-joined parameter, split again on the server, instead of a `pg`
 * array literal that escapes every text. These tests pin that the stored
 * events are exactly what was appended, whatever the texts hold, and that a
 * text holding a newline itself (never written by `Json.encode`, but a
 * `Storage` takes any string) still goes through, as an array.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as StreamId from "@mire/core/StreamId"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { randomUUID } from "node:crypto"
import * as PgEventStore from "../src/PgEventStore.js"
import { storeLayer } from "./utils.js"

/** An event as a `Storage` takes it, with the JSON texts given as they are. */
const storable = (dataJson: string, metadataJson = "{}"): EventStore.StorableEvent => ({
  eventId: randomUUID(),
  eventType: "encoding.e",
  schemaVersion: 1,
  data: {},
  metadata: {},
  dataJson,
  metadataJson,
  eventIdGiven: false
})

const request = (streamId: string, events: ReadonlyArray<EventStore.StorableEvent>): EventStore.StorableAppend => ({
  streamId: StreamId.fromStored(streamId),
  category: StreamId.categoryFromStored("encoding"),
  expected: ExpectedVersion.NoStream,
  events
})

const readAll = (streamId: string) =>
  Effect.map(Stream.runCollect(EventStore.readStream(streamId)), (events) =>
    Chunk.toReadonlyArray(events).map((e) => ({ data: e.data, metadata: e.metadata }))
  )

describe("PgEventStore append encoding", () => {
  layer(storeLayer(), { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.effect("texts with escaped newlines, quotes, backslashes, commas, braces and non-ASCII round-trip, in order", () =>
      Effect.gen(function* () {
        const data = [
          { text: "line 1\nline 2\r\n\ttab", quote: 'say "hi"', slash: "C:\\dir\\", brace: "{a,b}", n: 1 },
          { text: "\u2028\u2029 é 😀 \u001f", nested: { list: [1, "two", null, true, { deep: "\\n" }] }, n: 2 },
          JSON.parse('{"__proto__": {"polluted": "\\n"}, "n": 3}'),
          { empty: "", NULL: "NULL", n: 4 }
        ]
        const metadata = { correlationId: "a\nb", custom: { "key,\"with\"\nquotes": "x" } }
        yield* EventStore.append(
          "encoding-round",
          "encoding",
          ExpectedVersion.NoStream,
          data.map((d) => ({ eventType: "encoding.e", schemaVersion: 1, data: d, metadata }))
        )
        yield* EventStore.appendMany([
          { streamId: "encoding-many1", category: "encoding", expected: ExpectedVersion.NoStream, events: data.map((d) => ({ eventType: "encoding.e", schemaVersion: 1, data: d })) },
          { streamId: "encoding-many2", category: "encoding", expected: ExpectedVersion.NoStream, events: [{ eventType: "encoding.e", schemaVersion: 1, data: data[1]!, metadata }] }
        ])
        const round = yield* readAll("encoding-round")
        assert.deepStrictEqual(round.map((e) => e.data), data)
        assert.deepStrictEqual(round.map((e) => e.metadata), data.map(() => metadata))
        assert.ok(Object.hasOwn(round[2]!.data, "__proto__"))
        assert.strictEqual(Object.getPrototypeOf(round[2]!.data), Object.prototype)
        assert.deepStrictEqual((yield* readAll("encoding-many1")).map((e) => e.data), data)
        assert.deepStrictEqual(yield* readAll("encoding-many2"), [{ data: data[1], metadata }])
      }))

    it.effect("a JSON text holding a newline goes as an array: one stream and several, data and metadata", () =>
      Effect.gen(function* () {
        const storage = yield* PgEventStore.makeStorage
        const pretty = JSON.stringify({ a: 1, b: ["x", "y"] }, null, 2)
        yield* storage.append([request("encoding-nl1", [storable('{"n":1}'), storable(pretty), storable('{"n":3}', '{\n"custom": {}\n}')])])
        yield* storage.append([
          request("encoding-nl2", [storable(pretty)]),
          request("encoding-nl3", [storable('{"n":1}', '{\n"custom": {"k": 1}\n}'), storable('{"n":2}')])
        ])
        assert.deepStrictEqual(yield* readAll("encoding-nl1"), [
          { data: { n: 1 }, metadata: {} },
          { data: { a: 1, b: ["x", "y"] }, metadata: {} },
          { data: { n: 3 }, metadata: { custom: {} } }
        ])
        assert.deepStrictEqual(yield* readAll("encoding-nl2"), [{ data: { a: 1, b: ["x", "y"] }, metadata: {} }])
        assert.deepStrictEqual(yield* readAll("encoding-nl3"), [
          { data: { n: 1 }, metadata: { custom: { k: 1 } } },
          { data: { n: 2 }, metadata: {} }
        ])
      }).pipe(Effect.scoped))

    it.effect("event ids go as a plain array literal: one that is no UUID fails the append and writes nothing", () =>
      Effect.gen(function* () {
        const storage = yield* PgEventStore.makeStorage
        const bad = ["not-a-uuid", "NULL", `${randomUUID()},${randomUUID()}`, `"${randomUUID()}"}`, ""]
        for (const [i, eventId] of bad.entries()) {
          const event = { ...storable('{"n":1}'), eventId }
          const one = yield* Effect.either(storage.append([request(`encoding-bad${i}`, [storable('{"n":0}'), event])]))
          assert.strictEqual(one._tag, "Left", `one stream, id ${JSON.stringify(eventId)}`)
          const many = yield* Effect.either(
            storage.append([request(`encoding-badm${i}`, [event]), request(`encoding-badn${i}`, [storable('{"n":2}')])])
          )
          assert.strictEqual(many._tag, "Left", `several streams, id ${JSON.stringify(eventId)}`)
          for (const id of [`encoding-bad${i}`, `encoding-badm${i}`, `encoding-badn${i}`]) {
            assert.strictEqual(yield* EventStore.streamVersion(id), 0)
          }
        }
      }).pipe(Effect.scoped))
  })
})
