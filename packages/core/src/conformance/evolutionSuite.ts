/**
 * Schema evolution (upcasting), run against every store: rows written by
 * older code (raw, as that code stored them) are read by code that has
 * moved on, through every reader: load, loadForUpdate, snapshots,
 * projections. Also the test kit's projection specs on the store.
 *
 * @since 0.1.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Aggregate from "../Aggregate.js"
import * as AggregateRoot from "../AggregateRoot.js"
import type * as EventCodec from "../EventCodec.js"
import * as EventStore from "../EventStore.js"
import { EventDecodeError } from "../EventStoreError.js"
import * as Projection from "../Projection.js"
import type { JsonObject } from "../RecordedEvent.js"
import type * as LeaseStore from "../LeaseStore.js"
import type * as SubscriptionStore from "../SubscriptionStore.js"
import { ProjectionSpec } from "../testing/index.js"
import { Raw, TxReadModel, unique } from "./fixtures.js"

type Env = EventStore.EventStore | SubscriptionStore.SubscriptionStore | LeaseStore.LeaseStore | Raw | TxReadModel

// The events as the code is now (v3). What older code wrote:
// - Deposited v1 `{ amount }` (a float, euros), stored as `<category>.money-added` before it was renamed;
// - Deposited v2 `{ amount, currency }`;
// - Withdrawn v1 `{ amount }`, now the tag `Debited` with `{ cents }` (v2), its stored type kept.
const Money = Schema.Struct({ cents: Schema.Int, currency: Schema.String })
const Opened = Schema.TaggedStruct("Opened", { owner: Schema.String })
const Deposited = Schema.TaggedStruct("Deposited", { money: Money })
const Debited = Schema.TaggedStruct("Debited", { cents: Schema.Int })
const LedgerEvent = Schema.Union(Opened, Deposited, Debited)
type LedgerEvent = typeof LedgerEvent.Type

const LedgerState = Schema.Struct({
  owner: Schema.String,
  balance: Schema.Record({ key: Schema.String, value: Schema.Number }),
  events: Schema.Number
})
type LedgerState = typeof LedgerState.Type

/** v1 → v2 of Deposited, as a Schema: old encoded shape in, next encoded shape out. */
const depositedV1toV2 = Schema.transform(
  Schema.Struct({ amount: Schema.Number }),
  Schema.Struct({ amount: Schema.Number, currency: Schema.String }),
  { strict: true, decode: (v1) => ({ ...v1, currency: "EUR" }), encode: ({ amount }) => ({ amount }) }
)

/** v2 → v3 of Deposited, as a pure function. */
const depositedV2toV3 = (v2: JsonObject) => ({
  money: { cents: Math.round(Number(v2.amount) * 100), currency: v2.currency }
})

const cents = (v1: JsonObject) => ({ cents: Math.round(Number(v1.amount) * 100) })

const apply = (state: LedgerState, event: LedgerEvent): LedgerState => {
  const counted = { ...state, events: state.events + 1 }
  switch (event._tag) {
    case "Opened":
      return { ...counted, owner: event.owner }
    case "Deposited": {
      const { currency } = event.money
      return { ...counted, balance: { ...state.balance, [currency]: (state.balance[currency] ?? 0) + event.money.cents } }
    }
    case "Debited":
      return { ...counted, balance: { ...state.balance, EUR: (state.balance.EUR ?? 0) - event.cents } }
  }
}

const initial: LedgerState = { owner: "", balance: {}, events: 0 }

/** The ledger as the code is now, with its evolution declared; `definitions` overrides some. */
const ledger = (category: string, definitions: { readonly [tag: string]: EventCodec.EventDefinition } = {}) =>
  Aggregate.make({
    category,
    events: LedgerEvent,
    initial,
    apply,
    definitions: {
      Deposited: { version: 3, upcasters: [depositedV1toV2, depositedV2toV3], formerTypes: [`${category}.money-added`] },
      Debited: { type: `${category}.withdrawn`, version: 2, upcasters: [cents] },
      ...definitions
    },
    snapshot: { schema: LedgerState, version: 1, every: 1000 }
  })

/** Older code's rows for one stream, written raw at versions 1..n. */
const insertRows = (
  category: string,
  id: string,
  rows: ReadonlyArray<{ readonly type: string; readonly v: number; readonly data: Record<string, unknown> }>
) =>
  Effect.gen(function* () {
    const raw = yield* Raw
    for (const [i, row] of rows.entries()) {
      yield* raw.insert({
        streamId: `${category}-${id}`,
        category,
        version: i + 1,
        eventType: `${category}.${row.type}`,
        schemaVersion: row.v,
        data: row.data
      })
    }
  })

/** A stream as v1 code wrote it: opened, two deposits (one under the former type), a withdrawal. */
const v1Rows = [
  { type: "opened", v: 1, data: { owner: "Ada" } },
  { type: "deposited", v: 1, data: { amount: 12.5 } },
  { type: "money-added", v: 1, data: { amount: 1 } },
  { type: "withdrawn", v: 1, data: { amount: 2.25 } }
] as const

const v3Events: ReadonlyArray<LedgerEvent> = [
  Opened.make({ owner: "Ada" }),
  Deposited.make({ money: { cents: 1250, currency: "EUR" } }),
  Deposited.make({ money: { cents: 100, currency: "EUR" } }),
  Debited.make({ cents: 225 })
]

const v3State: LedgerState = { owner: "Ada", balance: { EUR: 1125 }, events: 4 }

/**
 * Registers the schema evolution suite: rows written by older code, inserted
 * through `Raw`, read by current code through every reader; `TxReadModel`
 * backs the transactional projection.
 *
 * @since 0.1.0
 * @category suites
 */
export const evolutionSuite = (name: string, storeLayer: Layer.Layer<Env>) =>
  describe(`schema evolution: ${name}`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("v1 rows, code at v3: load folds the v3 shape through v1 → v2 → v3", () =>
        Effect.gen(function* () {
          const category = unique("evo")
          const Ledger = ledger(category)
          yield* insertRows(category, "a", v1Rows)
          const root = Option.getOrThrow(yield* EventStore.load(Ledger, "a"))
          assert.deepStrictEqual(root.state, v3State)
          assert.strictEqual(root.version, 4)
          // Each stored row decodes to the v3 shape.
          const stored = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readStream(`${category}-a`)))
          assert.deepStrictEqual(yield* Effect.forEach(stored, Ledger.codec.decode), v3Events)
        }))

      it.effect("a stream mixing v1, v2 and v3 rows folds to one shape", () =>
        Effect.gen(function* () {
          const category = unique("evomix")
          yield* insertRows(category, "m", [
            { type: "opened", v: 1, data: { owner: "Bob" } },
            { type: "deposited", v: 1, data: { amount: 1 } },
            { type: "deposited", v: 2, data: { amount: 2, currency: "USD" } },
            { type: "deposited", v: 3, data: { money: { cents: 300, currency: "USD" } } },
            { type: "withdrawn", v: 2, data: { cents: 50 } }
          ])
          const root = Option.getOrThrow(yield* EventStore.load(ledger(category), "m"))
          assert.deepStrictEqual(root.state, { owner: "Bob", balance: { EUR: 50, USD: 500 }, events: 5 })
        }))

      it.effect("renamed: a former stored type and a renamed tag (its type kept) still load", () =>
        Effect.gen(function* () {
          const category = unique("evoren")
          yield* insertRows(category, "r", [
            { type: "opened", v: 1, data: { owner: "Cy" } },
            { type: "money-added", v: 2, data: { amount: 3, currency: "GBP" } },
            { type: "withdrawn", v: 1, data: { amount: 1 } }
          ])
          const root = Option.getOrThrow(yield* EventStore.load(ledger(category), "r"))
          assert.deepStrictEqual(root.state.balance, { GBP: 300, EUR: -100 })
        }))

      it.effect("writers always write the current version and type", () =>
        Effect.gen(function* () {
          const category = unique("evow")
          const Ledger = ledger(category)
          yield* insertRows(category, "w", v1Rows)
          const root = yield* EventStore.loadOrDefault(Ledger, "w")
          yield* EventStore.save(
            AggregateRoot.record(root, Deposited.make({ money: { cents: 1, currency: "EUR" } }), Debited.make({ cents: 2 }))
          )
          const written = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readStream(`${category}-w`, { from: 5 })))
          assert.deepStrictEqual(
            written.map((e) => [e.eventType, e.schemaVersion, e.data]),
            [
              [`${category}.deposited`, 3, { money: { cents: 1, currency: "EUR" } }],
              [`${category}.withdrawn`, 2, { cents: 2 }]
            ]
          )
          const reloaded = Option.getOrThrow(yield* EventStore.load(Ledger, "w"))
          assert.deepStrictEqual(reloaded.state.balance, { EUR: 1124 })
        }))

      it.effect("loadForUpdate and loadSnapshotted upcast the events they fold", () =>
        Effect.gen(function* () {
          const category = unique("evosnap")
          const Ledger = ledger(category)
          const raw = yield* Raw
          yield* insertRows(category, "s", v1Rows)
          const locked = yield* EventStore.transaction(EventStore.loadForUpdate(Ledger, "s"))
          assert.deepStrictEqual(Option.getOrThrow(locked).state, v3State)
          // No snapshot: a full replay.
          assert.deepStrictEqual(Option.getOrThrow(yield* EventStore.loadSnapshotted(Ledger, "s")).state, v3State)
          // A snapshot at v2; v3 and v4 are v1 rows folded on top of it.
          yield* raw.setSnapshot(`${category}-s`, 2, 1, { owner: "Ada", balance: { EUR: 1250 }, events: 2 })
          const snapshotted = Option.getOrThrow(yield* EventStore.loadSnapshotted(Ledger, "s"))
          assert.deepStrictEqual(snapshotted.state, v3State)
          assert.strictEqual(snapshotted.version, 4)
        }))

      it.effect("a projection receives the v3 shape", () =>
        Effect.gen(function* () {
          const category = unique("evoproj")
          const Ledger = ledger(category)
          const received: Array<LedgerEvent> = []
          const projection = Projection.atLeastOnce({
            subscriptionId: unique("evo-proj-"),
            aggregate: Ledger,
            handle: ({ event }) => Effect.sync(() => void received.push(event))
          })
          yield* insertRows(category, "p", v1Rows.slice(0, 2))
          const running = yield* ProjectionSpec.start(projection)
          yield* running.whenCaughtUp()
          yield* insertRows(category, "q", v1Rows)
          yield* running.whenCaughtUp()
          assert.deepStrictEqual(received, [...v3Events.slice(0, 2), ...v3Events])
        }).pipe(Effect.scoped))

      it.effect("a transactional projection (kit spec) reads v1 rows in the v3 shape", () =>
        Effect.gen(function* () {
          const model = yield* TxReadModel
          const category = unique("evotx")
          const Ledger = ledger(category)
          const projection = Projection.transactional({
            subscriptionId: unique("evo-tx-"),
            aggregate: Ledger,
            handle: ({ event, recorded }) =>
              event._tag === "Deposited"
                ? model.insert(`${category}:${recorded.streamId}:${event.money.cents}${event.money.currency}`)
                : Effect.void
          })
          yield* ProjectionSpec.given(
            projection,
            ProjectionSpec.stored(
              `${category}-t`,
              category,
              { eventType: `${category}.money-added`, schemaVersion: 1, data: { amount: 0.5 } },
              { eventType: `${category}.deposited`, schemaVersion: 2, data: { amount: 7, currency: "CHF" } }
            ),
            ProjectionSpec.stream(Ledger, "t", Deposited.make({ money: { cents: 9, currency: "EUR" } }))
          ).thenReads(
            Effect.map(model.rows(`${category}:`), (rows) => [...rows].sort()),
            [`${category}:${category}-t:50EUR`, `${category}:${category}-t:700CHF`, `${category}:${category}-t:9EUR`]
          )
        }))

      it.effect("a future schema version is a typed error naming the event, for every reader", () =>
        Effect.gen(function* () {
          const category = unique("evofut")
          const Ledger = ledger(category)
          yield* insertRows(category, "f", [
            { type: "opened", v: 1, data: { owner: "Ada" } },
            { type: "deposited", v: 4, data: { money: { cents: 1, currency: "EUR" }, memo: "from v4" } }
          ])
          const expectFuture = (e: unknown) => {
            if (!(e instanceof EventDecodeError)) return assert.fail(`expected an EventDecodeError, got ${String(e)}`)
            assert.strictEqual(e.streamId, `${category}-f`)
            assert.strictEqual(e.streamVersion, 2)
            assert.strictEqual(e.eventType, `${category}.deposited`)
            assert.strictEqual(e.schemaVersion, 4)
            assert.match(e.issue, /newer than this code knows \(3\)/)
          }
          expectFuture(yield* Effect.flip(EventStore.load(Ledger, "f")))
          expectFuture(yield* Effect.flip(EventStore.loadSnapshotted(Ledger, "f")))
          expectFuture(yield* Effect.flip(EventStore.transaction(EventStore.loadForUpdate(Ledger, "f"))))
          // A projection stops on it, naming it, after handling what came before; it never skips it.
          const handled: Array<string> = []
          const running = yield* ProjectionSpec.start(
            Projection.atLeastOnce({
              subscriptionId: unique("evo-fut-"),
              aggregate: Ledger,
              handle: ({ event }) => Effect.sync(() => void handled.push(event._tag))
            }),
            { batchSize: 1 }
          )
          const failure = yield* Effect.flip(running.whenCaughtUp())
          assert.strictEqual(failure._tag, "ProjectionFailed")
          if (failure._tag === "ProjectionFailed") {
            assert.strictEqual(failure.streamId, `${category}-f`)
            assert.strictEqual(failure.streamVersion, 2)
            assert.strictEqual(failure.eventType, `${category}.deposited`)
            expectFuture(failure.cause)
          }
          assert.deepStrictEqual(handled, ["Opened"])
          assert.strictEqual((yield* running.status).lag.events, 1, "the checkpoint stays before the event")
        }).pipe(Effect.scoped))

      it.effect("no upcaster chain, an unknown type, a failing upcaster: typed errors, never a wrong state", () =>
        Effect.gen(function* () {
          const category = unique("evobad")
          yield* insertRows(category, "b", [
            { type: "opened", v: 1, data: { owner: "Ada" } },
            { type: "deposited", v: 1, data: { amount: 1 } }
          ])
          const issue = (definitions: { readonly [tag: string]: EventCodec.EventDefinition }) =>
            Effect.flip(EventStore.load(ledger(category, definitions), "b")).pipe(
              Effect.map((e) => (e._tag === "EventDecodeError" ? `${e.streamVersion}: ${e.issue}` : e._tag))
            )
          // v3 declared with only the first step: v1 cannot reach v3.
          assert.match(yield* issue({ Deposited: { version: 3, upcasters: [depositedV1toV2] } }), /^2: no upcaster chain from version 1 to 3/)
          // An upcaster that throws.
          assert.match(
            yield* issue({
              Deposited: {
                version: 2,
                upcasters: [
                  () => {
                    throw new Error("bad data")
                  }
                ]
              }
            }),
            /^2: upcaster threw: Error: bad data/
          )
          // A chain whose result fails the current Schema.
          assert.match(yield* issue({ Deposited: { version: 2, upcasters: [(v1) => v1] } }), /^2: .*money/s)
          // A Schema step the stored data fails.
          assert.match(
            yield* issue({ Deposited: { version: 2, upcasters: [Schema.Struct({ amount: Schema.String })] } }),
            /^2: .*amount/s
          )
          // A type this code has never heard of.
          yield* insertRows(category, "u", [{ type: "teleported", v: 1, data: {} }])
          const unknown = yield* Effect.flip(EventStore.load(ledger(category), "u"))
          assert.strictEqual(unknown._tag, "EventDecodeError")
          if (unknown._tag === "EventDecodeError") assert.strictEqual(unknown.issue, "unknown event type")
        }))
    })
  })
