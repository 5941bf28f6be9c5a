/**
 * JSON at the store's boundary, run against every store: what an append
 * refuses (a typed `InvalidInput` naming the path, nothing written), what a
 * store keeps (the data after a JSON round trip, keys in jsonb's order), and
 * that a stored `__proto__` key never becomes a prototype on any reader.
 *
 * @since 0.1.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Aggregate from "../Aggregate.js"
import * as AggregateRoot from "../AggregateRoot.js"
import * as EventStore from "../EventStore.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import * as Metrics from "../Metrics.js"
import { JsonObject, type NewEvent, type RecordedEvent } from "../RecordedEvent.js"
import * as Subscription from "../Subscription.js"
import type * as SubscriptionStore from "../SubscriptionStore.js"
import { Raw, unique } from "./fixtures.js"
import { collectUntil } from "./scopes.js"

const poisoned = '{"__proto__": {"isAdmin": true}, "constructor": {"prototype": {"x": 1}}, "prototype": {"y": 2}, "a": 1}'

/** The object came back as JSON.parse made it: own keys only, prototype untouched. */
const assertSafe = (value: unknown, label: string) => {
  assert.isTrue(typeof value === "object" && value !== null, `${label}: an object`)
  const object = value as Record<string, unknown>
  assert.strictEqual(Object.getPrototypeOf(object), Object.prototype, `${label}: prototype`)
  assert.isTrue(Object.hasOwn(object, "__proto__"), `${label}: own __proto__`)
  assert.isTrue(Object.hasOwn(object, "constructor"), `${label}: own constructor`)
  assert.isTrue(Object.hasOwn(object, "prototype"), `${label}: own prototype`)
  assert.strictEqual(object.isAdmin, undefined, `${label}: isAdmin`)
  assert.strictEqual(object.a, 1, `${label}: a`)
  assert.deepStrictEqual(Object.getOwnPropertyDescriptor(object, "__proto__")?.value, { isAdmin: true })
  assert.strictEqual(({} as Record<string, unknown>).isAdmin, undefined, `${label}: Object.prototype untouched`)
}

const Noted = Schema.TaggedStruct("Noted", { note: JsonObject })
const NoteState = Schema.Struct({ note: Schema.NullOr(JsonObject), count: Schema.Number })
type NoteState = typeof NoteState.Type
const notes = (category: string) =>
  Aggregate.make({
    category,
    events: Noted,
    initial: { note: null, count: 0 } as NoteState,
    apply: (state: NoteState, event: typeof Noted.Type): NoteState => ({ note: event.note, count: state.count + 1 }),
    snapshot: { schema: NoteState, version: 1, every: 1 }
  })

const readAll = (streamId: string) =>
  Effect.map(Stream.runCollect(EventStore.readStream(streamId)), Chunk.toReadonlyArray)

const event = (data: unknown, extra: Partial<NewEvent> = {}): NewEvent =>
  ({ eventType: "json.probe", schemaVersion: 1, data, ...extra }) as NewEvent

class Opaque {
  constructor(readonly x: number) {}
}

const deep = (levels: number): Record<string, unknown> => {
  let value: Record<string, unknown> = { leaf: true }
  for (let i = 1; i < levels; i++) value = { n: value }
  return value
}

/** Inputs an append must refuse: the value, the field the error names (a prefix when it ends in …), and a fragment of its reason. */
const refused = (): ReadonlyArray<readonly [string, NewEvent, string, string]> => {
  const cycle: Record<string, unknown> = { a: 1 }
  cycle.self = { back: cycle }
  // 2^40 leaves through shared sub-objects: refused by size, without walking them all.
  let wide: unknown = "leaf"
  for (let i = 0; i < 40; i++) wide = { l: wide, r: wide }
  return [
    ["a shared sub-object 2^40 times", event({ wide }), "events[0].data.wide.l.l.l.l…", "longer than 1048576"],
    ["bigint deep in an array", event({ items: [{}, {}, {}, { price: 10n }] }), "events[0].data.items[3].price", "bigint is not JSON"],
    ["undefined value", event({ x: undefined }), "events[0].data.x", "undefined is not JSON"],
    ["undefined in an array", event({ xs: [1, undefined] }), "events[0].data.xs[1]", "undefined is not JSON"],
    ["NaN", event({ n: Number.NaN }), "events[0].data.n", "NaN is not JSON"],
    ["Infinity", event({ n: Number.NEGATIVE_INFINITY }), "events[0].data.n", "-Infinity is not JSON"],
    ["Date", event({ at: new Date(0) }), "events[0].data.at", "Date is not JSON"],
    ["Map", event({ m: new Map([["a", 1]]) }), "events[0].data.m", "Map is not JSON"],
    ["Set", event({ s: new Set([1]) }), "events[0].data.s", "Set is not JSON"],
    ["class instance", event({ o: new Opaque(1) }), "events[0].data.o", "Opaque is not JSON"],
    ["function", event({ f: () => 1 }), "events[0].data.f", "function is not JSON"],
    ["symbol value", event({ s: Symbol("s") }), "events[0].data.s", "symbol is not JSON"],
    ["symbol key", event({ o: { [Symbol("k")]: 1 } }), "events[0].data.o", "symbol key"],
    ["cycle", event(cycle), `events[0].data${".self.back".repeat(32)}`, "circular"],
    ["10,000 deep", event(deep(10_000)), `events[0].data${".n".repeat(64)}`, "nested deeper than 64"],
    ["65 deep", event(deep(65)), `events[0].data${".n".repeat(64)}`, "nested deeper than 64"],
    ["toJSON method", event({ t: { toJSON: () => "x" } }), "events[0].data.t.toJSON", "toJSON"],
    ["throwing toJSON", event({ toJSON: () => { throw new Error("boom") } }), "events[0].data.toJSON", "toJSON"],
    ["NUL in a string", event({ s: "a\u0000b" }), "events[0].data.s", "NUL"],
    ["NUL in a key", event({ "a\u0000b": 1 }), 'events[0].data["a\\u0000b"]', "NUL"],
    ["lone surrogate in a string", event({ s: "x\ud800" }), "events[0].data.s", "lone surrogate"],
    ["lone low surrogate in a key", event({ ["\udc00"]: 1 }), 'events[0].data["\\udc00"]', "lone surrogate"],
    ["NUL in the event type", event({}, { eventType: "json.\u0000" }), "events[0].eventType", "NUL"],
    ["lone surrogate in the event type", event({}, { eventType: "json.\ud83d" }), "events[0].eventType", "lone surrogate"],
    ["over 1 MiB", event({ s: "x".repeat(1_048_576) }), "events[0].data.s", "longer than 1048576"],
    // {"s":"…"} is 1,048,575 characters; with metadata {} the event is one over.
    ["one over 1 MiB with metadata", event({ s: "x".repeat(1_048_567) }), "events[0].metadata", "longer than 1048576"],
    ["bigint in custom metadata", event({}, { metadata: { custom: { n: 1n } } }), "events[0].metadata.custom.n", "bigint"],
    ["a non-string correlation id", event({}, { metadata: { correlationId: 5 } as never }), "events[0].metadata.correlationId", "string"],
    ["an unknown metadata field", event({}, { metadata: { tenant: "t" } as never }), "events[0].metadata.tenant", "metadata field"],
    ["array data", event([1]), "events[0].data", "JSON object"],
    ["Date data", event(new Date(0)), "events[0].data", "JSON object"]
  ]
}

/**
 * Registers the JSON boundary suite (refused data, kept data, `__proto__`
 * keys) for a store built with the default limits.
 *
 * @since 0.1.0
 * @category suites
 */
export const jsonSuite = (
  name: string,
  storeLayer: Layer.Layer<EventStore.EventStore | Raw | SubscriptionStore.SubscriptionStore>
) =>
  describe(`JSON at the boundary: ${name}`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("data that is not JSON is InvalidInput naming its path, and nothing of the batch is written", () =>
        Effect.gen(function* () {
          const raw = yield* Raw
          const category = unique("jbad")
          const before = yield* raw.count
          for (const [label, bad, field, reason] of refused()) {
            // The bad event is the second request of a batch: the first, valid one stays unwritten too.
            const error = yield* Effect.flip(
              EventStore.appendMany([
                { streamId: `${category}-ok`, category, expected: ExpectedVersion.Any, events: [event({ fine: 1 })] },
                { streamId: `${category}-bad`, category, expected: ExpectedVersion.Any, events: [bad] }
              ])
            )
            assert.strictEqual(error._tag, "InvalidInput", label)
            if (error._tag === "InvalidInput") {
              if (field.endsWith("…")) assert.isTrue(error.field.startsWith(field.slice(0, -1)), `${label}: ${error.field}`)
              else assert.strictEqual(error.field, field, label)
              assert.include(error.reason, reason, label)
            }
          }
          assert.strictEqual(yield* raw.count, before)
          assert.strictEqual(yield* EventStore.streamVersion(`${category}-ok`), 0)
          assert.strictEqual(yield* EventStore.streamVersion(`${category}-bad`), 0)
          // At the limits: 64 levels, and exactly 1 MiB of JSON (data {"s":"…"} plus metadata {}), are stored.
          yield* EventStore.append(`${category}-ok`, category, ExpectedVersion.NoStream, [
            event(deep(64)),
            event({ s: "x".repeat(1_048_566) })
          ])
          assert.strictEqual(yield* raw.count, before + 2)
        }))

      it.effect("a store keeps the data after a JSON round trip, keys in jsonb's order", () =>
        Effect.gen(function* () {
          const category = unique("jrt")
          const stream = `${category}-s`
          const shared = { k: "v" }
          const data = {
            bb: 1,
            a: -0,
            ccc: [1.5, null, true, "\u2028", "C:\\users\\u0000", "\u0001\u001f", "😀"],
            é: 1e21,
            b: { y: 0.1, x: 5e-324 },
            "😀": 2,
            s1: shared,
            s2: shared
          }
          const custom = { zz: 1, y: [{ b: 1, a: 2 }] }
          yield* EventStore.append(stream, category, ExpectedVersion.NoStream, [
            event(data, { metadata: { correlationId: "c", custom } })
          ])
          const [read] = yield* readAll(stream)
          assert.deepStrictEqual(read!.data, JSON.parse(JSON.stringify(data)))
          assert.isFalse(Object.is(read!.data.a, -0))
          assert.deepStrictEqual(Object.keys(read!.data), ["a", "b", "bb", "s1", "s2", "é", "ccc", "😀"])
          assert.deepStrictEqual(Object.keys(read!.data.b as object), ["x", "y"])
          assert.deepStrictEqual(read!.metadata, { correlationId: "c", custom: { y: [{ a: 2, b: 1 }], zz: 1 } })
          assert.deepStrictEqual(Object.keys(read!.metadata.custom!), ["y", "zz"])
          // The caller's objects are never the stored ones.
          assert.notStrictEqual(read!.data, data)
        }))

      it.effect("a duplicate eventId is InvalidInput, within one append and across appends", () =>
        Effect.gen(function* () {
          const raw = yield* Raw
          const category = unique("jdup")
          const id = crypto.randomUUID()
          const before = yield* raw.count
          const twice = yield* Effect.flip(
            EventStore.append(`${category}-a`, category, ExpectedVersion.Any, [
              event({ n: 1 }, { eventId: id }),
              event({ n: 2 }, { eventId: id.toUpperCase() })
            ])
          )
          assert.strictEqual(twice._tag === "InvalidInput" && twice.field, "events[1].eventId")
          const acrossRequests = yield* Effect.flip(
            EventStore.appendMany([
              { streamId: `${category}-a`, category, expected: ExpectedVersion.Any, events: [event({ n: 1 }, { eventId: id })] },
              { streamId: `${category}-b`, category, expected: ExpectedVersion.Any, events: [event({ n: 2 }, { eventId: id })] }
            ])
          )
          assert.strictEqual(acrossRequests._tag === "InvalidInput" && acrossRequests.field, "events[0].eventId")
          assert.strictEqual(yield* raw.count, before)
          yield* EventStore.append(`${category}-a`, category, ExpectedVersion.NoStream, [event({ n: 1 }, { eventId: id.toUpperCase() })])
          const [stored] = yield* readAll(`${category}-a`)
          assert.strictEqual(stored!.eventId, id)
          for (const [stream, expected] of [[`${category}-a`, ExpectedVersion.Exact(1)], [`${category}-c`, ExpectedVersion.NoStream]] as const) {
            const again = yield* Effect.flip(
              EventStore.appendMany([
                { streamId: `${category}-d`, category, expected: ExpectedVersion.Any, events: [event({ n: 0 })] },
                { streamId: stream, category, expected, events: [event({ n: 3 }), event({ n: 4 }, { eventId: id })] }
              ])
            )
            assert.strictEqual(again._tag, "InvalidInput")
            if (again._tag === "InvalidInput") {
              assert.strictEqual(again.field, "events[1].eventId")
              assert.include(again.reason, id)
            }
          }
          assert.strictEqual(yield* raw.count, before + 1)
          assert.strictEqual(yield* EventStore.streamVersion(`${category}-d`), 0)
          // As on Postgres: a stream whose expectation fails writes nothing, so its ids are not checked;
          // a stored id on a stream that passes fails the whole batch.
          const conflictFirst = yield* Effect.flip(
            EventStore.appendMany([
              { streamId: `${category}-a`, category, expected: ExpectedVersion.NoStream, events: [event({ n: 9 })] },
              { streamId: `${category}-g`, category, expected: ExpectedVersion.Any, events: [event({ n: 9 }, { eventId: id })] }
            ])
          )
          assert.strictEqual(conflictFirst._tag === "InvalidInput" && conflictFirst.field, "events[0].eventId")
          const conflictOnly = yield* Effect.flip(
            EventStore.append(`${category}-a`, category, ExpectedVersion.NoStream, [event({ n: 9 }, { eventId: id })])
          )
          assert.strictEqual(conflictOnly._tag, "ConcurrencyConflict")
          // The store still works after the refusal.
          yield* EventStore.append(`${category}-a`, category, ExpectedVersion.Exact(1), [event({ n: 5 })])
          assert.strictEqual(yield* raw.count, before + 2)
          // Inside a transaction the refusal changes nothing either: the transaction goes on and commits.
          const inside = yield* EventStore.transaction(
            Effect.gen(function* () {
              yield* EventStore.append(`${category}-e`, category, ExpectedVersion.NoStream, [event({ n: 6 })])
              const refused = yield* Effect.flip(
                EventStore.append(`${category}-f`, category, ExpectedVersion.NoStream, [event({ n: 7 }, { eventId: id })])
              )
              yield* EventStore.append(`${category}-e`, category, ExpectedVersion.Exact(1), [event({ n: 8 })])
              return refused
            })
          )
          assert.strictEqual(inside._tag === "InvalidInput" && inside.field, "events[0].eventId")
          assert.deepStrictEqual(
            (yield* readAll(`${category}-e`)).map((e) => e.data.n),
            [6, 8]
          )
          assert.strictEqual(yield* EventStore.streamVersion(`${category}-f`), 0)
        }))

      it.scoped("a stored __proto__ key stays an own property: readStream, readCategory, load, subscription", () =>
        Effect.gen(function* () {
          const category = unique("jproto")
          const Notes = notes(category)
          const sub = yield* Subscription.make({ subscriptionId: unique("jproto-"), categories: [category], batchSize: 10 })
          yield* EventStore.append(`${category}-raw`, category, ExpectedVersion.NoStream, [
            event(JSON.parse(poisoned), { metadata: { custom: JSON.parse(poisoned) } })
          ])
          yield* EventStore.save(AggregateRoot.record(AggregateRoot.make(Notes, "1"), Noted.make({ note: JSON.parse(poisoned) })))
          const [read] = yield* readAll(`${category}-raw`)
          assertSafe(read!.data, "readStream data")
          assertSafe(read!.metadata.custom, "readStream metadata.custom")
          const inCategory = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readCategory(category)))
          assert.strictEqual(inCategory.length, 2)
          assertSafe(inCategory[0]!.data, "readCategory")
          assertSafe(inCategory[1]!.data.note, "readCategory (typed event)")
          const loaded = Option.getOrThrow(yield* EventStore.load(Notes, "1"))
          assertSafe(loaded.state.note, "load")
          const delivered: ReadonlyArray<RecordedEvent> = yield* collectUntil(sub, (got) => got.length >= 2)
          assertSafe(delivered[0]!.data, "subscription")
          assertSafe(delivered[0]!.metadata.custom, "subscription metadata")
          assertSafe(delivered[1]!.data.note, "subscription (typed event)")
        }))

      it.effect("a stored __proto__ key stays an own property in a snapshot", () =>
        Effect.gen(function* () {
          const raw = yield* Raw
          const Notes = notes(unique("jsnap"))
          // Written by the store (saveSnapshotting), read back by loadSnapshotted.
          yield* EventStore.saveSnapshotting(
            AggregateRoot.record(AggregateRoot.make(Notes, "1"), Noted.make({ note: JSON.parse(poisoned) }))
          )
          assertSafe(Option.getOrThrow(yield* EventStore.loadSnapshotted(Notes, "1")).state.note, "snapshot written by the store")
          // Written raw, with a count no replay gives: the snapshot is what was loaded.
          yield* raw.setSnapshot(`${Notes.category}-1`, 1, 1, JSON.parse(`{"note": ${poisoned}, "count": 42}`))
          const loaded = Option.getOrThrow(yield* EventStore.loadSnapshotted(Notes, "1"))
          assert.strictEqual(loaded.state.count, 42)
          assertSafe(loaded.state.note, "raw snapshot")
        }))

      it.effect("a stored row with a __proto__ key (written by other code) decodes safely", () =>
        Effect.gen(function* () {
          const raw = yield* Raw
          const category = unique("jrow")
          yield* raw.insert({ streamId: `${category}-s`, category, version: 1, eventType: "json.probe", schemaVersion: 1, data: JSON.parse(poisoned) })
          const [read] = yield* readAll(`${category}-s`)
          assertSafe(read!.data, "raw row")
        }))
    })
  })

/**
 * The limits the store given to `jsonLimitsSuite` must be built with: JSON
 * depth 3 and 64 characters per event.
 *
 * @since 0.1.0
 * @category suites
 */
export const limits = { maxDepth: 3, maxEventSize: 64 } as const

/**
 * Registers the size and depth limit suite; `storeLayer` is a store built
 * with `limits`.
 *
 * @since 0.1.0
 * @category suites
 */
export const jsonLimitsSuite = (name: string, storeLayer: Layer.Layer<EventStore.EventStore | Raw>) =>
  describe(`JSON limits set where the store is built: ${name}`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("depth and size limits are the store's own, for events and snapshots", () =>
        Effect.gen(function* () {
          const raw = yield* Raw
          const category = unique("jlim")
          const stream = `${category}-s`
          const before = yield* raw.count
          const tooDeep = yield* Effect.flip(
            EventStore.append(stream, category, ExpectedVersion.Any, [event({ a: { b: { c: { d: 1 } } } })])
          )
          assert.strictEqual(tooDeep._tag === "InvalidInput" && tooDeep.field, "events[0].data.a.b.c")
          assert.include(tooDeep.message, "nested deeper than 3")
          // {"s":"…"} + {} = 10 characters around the string.
          const tooBig = yield* Effect.flip(
            EventStore.append(stream, category, ExpectedVersion.Any, [event({ s: "x".repeat(55) })])
          )
          assert.strictEqual(tooBig._tag === "InvalidInput" && tooBig.field, "events[0].metadata")
          assert.strictEqual(yield* raw.count, before)
          yield* EventStore.append(stream, category, ExpectedVersion.NoStream, [event({ a: { b: { c: 1 } } }), event({ s: "x".repeat(54) })])
          assert.strictEqual(yield* raw.count, before + 2)
          // A snapshot state over the limits is not written (the save still succeeds); one within them is.
          // The event {"note":{"t":"…"}} + {} is 19 + n characters, the state {"note":{"t":"…"},"count":1} 27 + n.
          const Notes = notes(category)
          const misses = (yield* Metric.value(Metrics.snapshotMisses)).count
          const big = yield* EventStore.saveSnapshotting(
            AggregateRoot.record(AggregateRoot.make(Notes, "big"), Noted.make({ note: { t: "y".repeat(40) } }))
          )
          assert.strictEqual(big.version, 1)
          const loaded = Option.getOrThrow(yield* EventStore.loadSnapshotted(Notes, "big"))
          assert.deepStrictEqual(loaded.state, { note: { t: "y".repeat(40) }, count: 1 })
          assert.strictEqual((yield* Metric.value(Metrics.snapshotMisses)).count, misses + 1)
          const hits = (yield* Metric.value(Metrics.snapshotHits)).count
          yield* EventStore.saveSnapshotting(
            AggregateRoot.record(AggregateRoot.make(Notes, "small"), Noted.make({ note: { t: "y".repeat(30) } }))
          )
          assert.strictEqual(Option.getOrThrow(yield* EventStore.loadSnapshotted(Notes, "small")).state.count, 1)
          assert.strictEqual((yield* Metric.value(Metrics.snapshotHits)).count, hits + 1)
        }))
    })
  })
