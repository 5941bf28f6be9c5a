/**
 * The `EventStore` contract (append, read, load, save, concurrency, input
 * validation), run against a store by swapping the Layer.
 *
 * @since 0.1.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as AggregateRoot from "../AggregateRoot.js"
import * as EventStore from "../EventStore.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import type { NewEvent } from "../RecordedEvent.js"
import { account, Deposited, Opened, Raw, unique, type Withdrawn } from "./fixtures.js"

const ev = (mark: string): NewEvent => ({ eventType: "test.marked", schemaVersion: 1, data: { mark } })

const versions = (streamId: string, options?: EventStore.ReadStreamOptions) =>
  EventStore.readStream(streamId, options).pipe(
    Stream.map((e) => e.streamVersion),
    Stream.runCollect,
    Effect.map(Chunk.toReadonlyArray)
  )

/** A stream's versions read both ways, `readStream` and `readStreamEvents`, which must give the same events. */
const versionsBothWays = (streamId: string, options?: EventStore.ReadStreamOptions) =>
  Effect.gen(function* () {
    const streamed = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readStream(streamId, options)))
    const collected = yield* EventStore.readStreamEvents(streamId, options)
    assert.deepStrictEqual(collected, streamed, `readStreamEvents against readStream, ${JSON.stringify(options ?? {})}`)
    return streamed.map((e) => e.streamVersion)
  })

// What a caller without the type checker (plain JavaScript, decoded JSON) can
// pass: the store must refuse it at run time, so the suite builds it on purpose.
const illTyped = (data: unknown): NewEvent => ({ eventType: "x", schemaVersion: 1, data }) as NewEvent

/** A value a JavaScript caller could pass where an `ExpectedVersion` belongs. */
const illTypedExpectation = (value: unknown): ExpectedVersion.ExpectedVersion => value as ExpectedVersion.ExpectedVersion

/**
 * Registers the event store suite under `describe`; `storeLayer` provides the
 * store under test and its `Raw` row access.
 *
 * @since 0.1.0
 * @category suites
 */
export const eventStoreSuite = (name: string, storeLayer: Layer.Layer<EventStore.EventStore | Raw>) =>
  describe(`EventStore contract: ${name}`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("round trip: save, load, read back with metadata", () =>
        Effect.gen(function* () {
          const Account = account(unique("acct"))
          const root = AggregateRoot.record(
            AggregateRoot.withMetadata(yield* EventStore.loadOrDefault(Account, "1"), {
              correlationId: "corr-1",
              custom: { tenant: "t1" }
            }),
            Opened.make({ owner: "Ada" }),
            Deposited.make({ amount: 100 })
          )
          assert.strictEqual(root.version, 0)
          assert.strictEqual(root.pending.length, 2)
          const saved = yield* EventStore.save(root)
          assert.strictEqual(saved.version, 2)
          assert.strictEqual(saved.pending.length, 0)
          const loaded = Option.getOrThrow(yield* EventStore.load(Account, "1"))
          assert.deepStrictEqual(loaded.state, { owner: "Ada", balance: 100, open: true, events: 2 })
          assert.strictEqual(loaded.version, 2)
          assert.strictEqual(loaded.streamId, `${Account.category}-1`)
          const events = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readStream(loaded.streamId)))
          assert.strictEqual(events.length, 2)
          const first = events[0]!
          assert.strictEqual(first.eventType, `${Account.category}.opened`)
          assert.strictEqual(events[1]!.eventType, `${Account.category}.deposited`)
          assert.strictEqual(first.category, Account.category)
          assert.strictEqual(first.schemaVersion, 1)
          assert.deepStrictEqual(first.data, { owner: "Ada" })
          assert.match(first.eventId, /^[0-9a-f-]{36}$/)
          assert.strictEqual(first.metadata.correlationId, "corr-1")
          assert.deepStrictEqual(first.metadata.custom, { tenant: "t1" })
          assert.isTrue(events[1]!.globalPosition > first.globalPosition)
          assert.strictEqual(events[1]!.transactionId, first.transactionId)
          assert.isTrue(first.recordedAt instanceof Date)
          assert.isTrue(Option.isNone(yield* EventStore.load(Account, "missing")))
          const fresh = yield* EventStore.loadOrDefault(Account, "missing")
          assert.strictEqual(fresh.version, 0)
        }))

      it.effect("append returns the committed range", () =>
        Effect.gen(function* () {
          const category = unique("cr")
          const a = yield* EventStore.append(`${category}-s`, category, ExpectedVersion.NoStream, [ev("1"), ev("2")])
          assert.strictEqual(a.firstVersion, 1)
          assert.strictEqual(a.lastVersion, 2)
          assert.strictEqual(a.lastPosition - a.firstPosition, 1n)
          const b = yield* EventStore.append(`${category}-s`, category, ExpectedVersion.Exact(2), [ev("3")])
          assert.strictEqual(b.firstVersion, 3)
          assert.isTrue(b.firstPosition > a.lastPosition)
          assert.strictEqual(yield* EventStore.streamVersion(`${category}-s`), 3)
        }))

      it.effect("a stream's events keep the category and metadata each append gave them", () =>
        Effect.gen(function* () {
          const category = unique("mc")
          const other = unique("mo")
          const s = `${category}-s`
          const empty = ev("1")
          const tagged: NewEvent = { ...ev("2"), metadata: { correlationId: "c-2", custom: { k: "v" } } }
          yield* EventStore.append(s, category, ExpectedVersion.NoStream, [empty, tagged])
          // The same stream, another category: an append names the category of its events.
          yield* EventStore.append(s, other, ExpectedVersion.Exact(2), [ev("3")])
          yield* EventStore.append(s, category, ExpectedVersion.Exact(3), [{ ...ev("4"), metadata: {} }])
          const read = (options?: EventStore.ReadStreamOptions) =>
            EventStore.readStream(s, options).pipe(
              Stream.map((e): readonly [number, string, string, unknown] => [e.streamVersion, e.category, e.aggregateId, e.metadata]),
              Stream.runCollect,
              Effect.map(Chunk.toReadonlyArray)
            )
          const expected: ReadonlyArray<readonly [number, string, string, unknown]> = [
            [1, category, "s", {}],
            [2, category, "s", { correlationId: "c-2", custom: { k: "v" } }],
            [3, other, s, {}],
            [4, category, "s", {}]
          ]
          assert.deepStrictEqual(yield* read(), expected)
          assert.deepStrictEqual(yield* read({ from: 3 }), expected.slice(2))
          assert.deepStrictEqual(yield* read({ direction: "backward" }), [...expected].reverse())
          const events = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readStream(s)))
          // Each event its own metadata object, never one shared by several.
          assert.notStrictEqual(events[0]!.metadata, events[2]!.metadata)
        }))

      it.effect("every ExpectedVersion, right and wrong", () =>
        Effect.gen(function* () {
          const category = unique("ev")
          const s = `${category}-s`
          const conflict = (expected: ExpectedVersion.ExpectedVersion) =>
            Effect.flip(EventStore.append(s, category, expected, [ev("x")]))
          // Missing stream.
          const exists = yield* conflict(ExpectedVersion.StreamExists)
          assert.strictEqual(exists._tag, "ConcurrencyConflict")
          if (exists._tag === "ConcurrencyConflict") {
            assert.strictEqual(exists.actual, null)
            assert.strictEqual(exists.streamId, s)
          }
          const exact1 = yield* conflict(ExpectedVersion.Exact(1))
          assert.strictEqual(exact1._tag === "ConcurrencyConflict" && exact1.actual, null)
          yield* EventStore.append(s, category, ExpectedVersion.NoStream, [ev("1")])
          // Existing stream at v1.
          const noStream = yield* conflict(ExpectedVersion.NoStream)
          assert.strictEqual(noStream._tag === "ConcurrencyConflict" && noStream.actual, 1)
          const exact0 = yield* conflict(ExpectedVersion.Exact(0))
          assert.strictEqual(exact0._tag === "ConcurrencyConflict" && exact0.actual, 1)
          const exact5 = yield* conflict(ExpectedVersion.Exact(5))
          assert.strictEqual(exact5._tag === "ConcurrencyConflict" && exact5.actual, 1)
          yield* EventStore.append(s, category, ExpectedVersion.StreamExists, [ev("2")])
          yield* EventStore.append(s, category, ExpectedVersion.Exact(2), [ev("3")])
          yield* EventStore.append(s, category, ExpectedVersion.Any, [ev("4")])
          yield* EventStore.append(`${category}-new`, category, ExpectedVersion.Any, [ev("1")])
          yield* EventStore.append(`${category}-zero`, category, ExpectedVersion.Exact(0), [ev("1")])
          assert.deepStrictEqual(yield* versions(s), [1, 2, 3, 4])
          assert.deepStrictEqual(yield* versions(`${category}-new`), [1])
          assert.deepStrictEqual(yield* versions(`${category}-zero`), [1])
        }))

      it.effect("16 fibers at the same expected version: one wins, the rest see the real version", () =>
        Effect.gen(function* () {
          const category = unique("race")
          const s = `${category}-s`
          yield* EventStore.append(s, category, ExpectedVersion.NoStream, [ev("seed")])
          const results = yield* Effect.all(
            Array.from({ length: 16 }, (_, i) =>
              Effect.either(EventStore.append(s, category, ExpectedVersion.Exact(1), [ev(`w${i}`), ev(`w${i}b`)]))
            ),
            { concurrency: "unbounded" }
          )
          const wins = results.filter(Either.isRight)
          const losses = results.filter(Either.isLeft).map((r) => r.left)
          assert.strictEqual(wins.length, 1)
          assert.strictEqual(losses.length, 15)
          for (const loss of losses) {
            assert.strictEqual(loss._tag, "ConcurrencyConflict")
            if (loss._tag === "ConcurrencyConflict") assert.strictEqual(loss.actual, 3)
          }
          assert.deepStrictEqual(yield* versions(s), [1, 2, 3])
        }))

      it.effect("a stored event that no longer decodes is an EventDecodeError", () =>
        Effect.gen(function* () {
          const raw = yield* Raw
          const Account = account(unique("dec"))
          yield* EventStore.save(
            AggregateRoot.record(AggregateRoot.make(Account, "1"), Opened.make({ owner: "A" }), Deposited.make({ amount: 5 }))
          )
          yield* raw.setData(`${Account.category}-1`, 2, { amount: "five" })
          const error = yield* Effect.flip(EventStore.load(Account, "1"))
          assert.strictEqual(error._tag, "EventDecodeError")
          if (error._tag === "EventDecodeError") {
            assert.strictEqual(error.streamId, `${Account.category}-1`)
            assert.strictEqual(error.streamVersion, 2)
            assert.strictEqual(error.eventType, `${Account.category}.deposited`)
          }
          yield* raw.setData(`${Account.category}-1`, 2, { amount: 5 })
          yield* raw.setType(`${Account.category}-1`, 2, `${Account.category}.vanished`, 1)
          const unknown = yield* Effect.flip(EventStore.load(Account, "1"))
          assert.strictEqual(unknown._tag === "EventDecodeError" && unknown.issue, "unknown event type")
        }))

      it.effect("a gap in versions is StreamCorrupt", () =>
        Effect.gen(function* () {
          const raw = yield* Raw
          const Account = account(unique("gap"))
          yield* EventStore.save(
            AggregateRoot.record(
              AggregateRoot.make(Account, "1"),
              Opened.make({ owner: "A" }),
              Deposited.make({ amount: 5 }),
              Deposited.make({ amount: 6 })
            )
          )
          yield* raw.deleteEvent(`${Account.category}-1`, 2)
          const error = yield* Effect.flip(EventStore.load(Account, "1"))
          assert.strictEqual(error._tag, "StreamCorrupt")
          if (error._tag === "StreamCorrupt") {
            assert.strictEqual(error.expectedVersion, 2)
            assert.strictEqual(error.foundVersion, 3)
          }
        }))

      it.effect("bad input is InvalidInput and writes nothing", () =>
        Effect.gen(function* () {
          const raw = yield* Raw
          const category = unique("bad")
          const before = yield* raw.count
          const badIds = ["", "x".repeat(10_000), "a'; DROP TABLE es_events; --", "账户-1", "a b", "a\u0000b"]
          for (const id of badIds) {
            const e = yield* Effect.flip(EventStore.append(id, category, ExpectedVersion.Any, [ev("x")]))
            assert.strictEqual(e._tag, "InvalidInput", `stream id ${JSON.stringify(id.slice(0, 20))}`)
            const r = yield* Effect.flip(Stream.runDrain(EventStore.readStream(id)))
            assert.strictEqual(r._tag, "InvalidInput")
            const a = yield* Effect.flip(EventStore.readStreamEvents(id))
            assert.strictEqual(a._tag, "InvalidInput")
          }
          for (const bad of ["", "has-dash", "1digit", "a'b"]) {
            const e = yield* Effect.flip(EventStore.append(`${category}-s`, bad, ExpectedVersion.Any, [ev("x")]))
            assert.strictEqual(e._tag, "InvalidInput")
          }
          for (const version of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
            const e = yield* Effect.flip(EventStore.append(`${category}-s`, category, ExpectedVersion.Exact(version), [ev("x")]))
            assert.strictEqual(e._tag, "InvalidInput")
          }
          // What a JavaScript caller could pass as an expectation.
          for (const expected of [undefined, null, "Any", { _tag: "Bogus" }, { _tag: "Exact" }, { _tag: "Exact", version: "1" }]) {
            const e = yield* Effect.flip(
              EventStore.appendMany([
                { streamId: `${category}-m`, category, expected: ExpectedVersion.NoStream, events: [ev("x")] },
                { streamId: `${category}-s`, category, expected: illTypedExpectation(expected), events: [ev("x")] }
              ])
            )
            assert.strictEqual(e._tag, "InvalidInput", `expectation ${JSON.stringify(expected)}`)
          }
          const empty = yield* Effect.flip(EventStore.append(`${category}-s`, category, ExpectedVersion.Any, []))
          assert.strictEqual(empty._tag, "InvalidInput")
          const badData = yield* Effect.flip(
            EventStore.append(`${category}-s`, category, ExpectedVersion.Any, [
              illTyped([])
            ])
          )
          assert.strictEqual(badData._tag, "InvalidInput")
          for (const options of [{ limit: 0 }, { limit: -1 }, { from: -1 }, { limit: 1.5 }, { pageSize: 0 }]) {
            const e = yield* Effect.flip(Stream.runDrain(EventStore.readStream(`${category}-s`, options)))
            assert.strictEqual(e._tag, "InvalidInput")
            const a = yield* Effect.flip(EventStore.readStreamEvents(`${category}-s`, options))
            assert.strictEqual(a._tag, "InvalidInput")
          }
          const Account = account(category)
          const failing = AggregateRoot.record(
            AggregateRoot.make(Account, "1"),
            Opened.make({ owner: "A" }),
            Deposited.make({ amount: 5 }),
            { _tag: "Withdrawn", amount: -3 } as typeof Withdrawn.Type
          )
          const schemaError = yield* Effect.flip(EventStore.save(failing))
          assert.strictEqual(schemaError._tag, "InvalidInput")
          const badAggregateId = yield* Effect.flip(EventStore.load(Account, "no spaces"))
          assert.strictEqual(badAggregateId._tag, "InvalidInput")
          assert.strictEqual(yield* raw.count, before)
          assert.strictEqual(yield* EventStore.streamVersion(`${category}-1`), 0)
          assert.strictEqual(yield* EventStore.streamVersion(`${category}-s`), 0)
          assert.strictEqual(yield* EventStore.streamVersion(`${category}-m`), 0)
        }))

      it.effect("reads forward, backward, from and limit; category and all", () =>
        Effect.gen(function* () {
          const category = unique("rd")
          const s = `${category}-s`
          yield* EventStore.append(s, category, ExpectedVersion.NoStream, Array.from({ length: 25 }, (_, i) => ev(`${i}`)))
          yield* EventStore.append(`${category}-t`, category, ExpectedVersion.NoStream, [ev("t1")])
          const all = Array.from({ length: 25 }, (_, i) => i + 1)
          assert.deepStrictEqual(yield* versionsBothWays(s), all)
          assert.deepStrictEqual(yield* versionsBothWays(s, { pageSize: 4 }), all)
          assert.deepStrictEqual(yield* versionsBothWays(s, { direction: "backward", pageSize: 7 }), [...all].reverse())
          assert.deepStrictEqual(yield* versionsBothWays(s, { from: 20 }), [20, 21, 22, 23, 24, 25])
          assert.deepStrictEqual(yield* versionsBothWays(s, { from: 5, limit: 3 }), [5, 6, 7])
          assert.deepStrictEqual(yield* versionsBothWays(s, { from: 5, direction: "backward", limit: 10, pageSize: 2 }), [5, 4, 3, 2, 1])
          assert.deepStrictEqual(yield* versionsBothWays(s, { limit: 9, pageSize: 4 }), all.slice(0, 9))
          assert.deepStrictEqual(yield* versionsBothWays(`${category}-nothing`), [])
          const inCategory = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readCategory(category, { pageSize: 6 })))
          assert.strictEqual(inCategory.length, 26)
          assert.isTrue(inCategory.every((e, i) => i === 0 || e.globalPosition > inCategory[i - 1]!.globalPosition))
          const back = Chunk.toReadonlyArray(
            yield* Stream.runCollect(EventStore.readCategory(category, { direction: "backward", limit: 3 }))
          )
          assert.deepStrictEqual(back.map((e) => e.streamId), [`${category}-t`, s, s])
          const from = inCategory[10]!.globalPosition
          const tail = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readCategory(category, { from })))
          assert.strictEqual(tail.length, 16)
          const everything = yield* Stream.runCount(EventStore.readAll({ from: inCategory[0]!.globalPosition }))
          assert.isTrue(everything >= 26)
        }))

      it.effect("a 100k-event category streams in pages, in bounded memory", () =>
        Effect.gen(function* () {
          const category = unique("big")
          const payload = "x".repeat(200)
          for (let batch = 0; batch < 20; batch++) {
            yield* EventStore.appendMany(
              Array.from({ length: 5 }, (_, s) => ({
                streamId: `${category}-${batch}-${s}`,
                category,
                expected: ExpectedVersion.NoStream,
                events: Array.from({ length: 1000 }, (_, i) => ({
                  eventType: "test.big",
                  schemaVersion: 1,
                  data: { i, payload }
                }))
              }))
            )
          }
          const start = process.memoryUsage().heapUsed
          let peak = start
          const result = yield* EventStore.readCategory(category, { pageSize: 1000 }).pipe(
            Stream.chunks,
            Stream.runFold({ count: 0, maxChunk: 0 }, (acc, chunk) => {
              const count = acc.count + chunk.length
              if (count % 10_000 === 0) peak = Math.max(peak, process.memoryUsage().heapUsed)
              return { count, maxChunk: Math.max(acc.maxChunk, chunk.length) }
            })
          )
          assert.strictEqual(result.count, 100_000)
          assert.isAtMost(result.maxChunk, 1000)
          // The whole category materialised would be well over 60 MB of objects.
          assert.isBelow(peak - start, 60 * 1024 * 1024)
        }), { timeout: 120_000 })
    })
  })
