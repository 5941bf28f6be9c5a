import { assert, describe, expectTypeOf, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Aggregate from "../src/Aggregate.js"
import * as AggregateRoot from "../src/AggregateRoot.js"
import * as EventStore from "../src/EventStore.js"
import { InvalidInput } from "../src/EventStoreError.js"
import * as ExpectedVersion from "../src/ExpectedVersion.js"
import * as InMemory from "../src/InMemory.js"
import type { CommittedEvents, RecordedEvent } from "../src/RecordedEvent.js"
import * as StreamId from "../src/StreamId.js"
import * as Subscription from "../src/Subscription.js"
import * as SubscriptionId from "../src/SubscriptionId.js"

const streamIds: ReadonlyArray<unknown> = [
  "account-42",
  "a",
  "A_b.c:d@e+f=g~h/i-j",
  "x".repeat(255),
  "x".repeat(256),
  "",
  "has space",
  "quote'",
  "ünïcode",
  "semi;colon",
  "new\nline",
  42,
  undefined
]

const categories: ReadonlyArray<unknown> = [
  "account",
  "Account_2",
  "a".repeat(63),
  "a".repeat(64),
  "",
  "1account",
  "with-dash",
  "_lead",
  "space d",
  null
]

const subscriptionIds: ReadonlyArray<unknown> = ["balances", "any kind: ünïcode, spaces", "s".repeat(255), "s".repeat(256), "", 7]

describe("branded ids", () => {
  it("the fast guards and the Schemas accept exactly the same values", () => {
    for (const value of streamIds) {
      assert.strictEqual(StreamId.is(value), Schema.is(StreamId.StreamId)(value), `stream id ${String(value)}`)
      assert.strictEqual(Either.isRight(Schema.decodeUnknownEither(StreamId.StreamId)(value)), StreamId.is(value))
    }
    for (const value of categories) {
      assert.strictEqual(StreamId.isCategory(value), Schema.is(StreamId.Category)(value), `category ${String(value)}`)
    }
    for (const value of subscriptionIds) {
      assert.strictEqual(SubscriptionId.is(value), Schema.is(SubscriptionId.SubscriptionId)(value), `subscription id ${String(value)}`)
    }
    // The tables hold both kinds of value, so the agreement above is not vacuous.
    assert.deepStrictEqual(
      streamIds.map(StreamId.is),
      [true, true, true, true, false, false, false, false, false, false, false, false, false]
    )
    assert.deepStrictEqual(categories.map(StreamId.isCategory), [true, true, true, false, false, false, false, false, false, false])
    assert.deepStrictEqual(subscriptionIds.map(SubscriptionId.is), [true, true, true, false, false, false])
  })

  it.effect("validation brands good ids and refuses bad ones with InvalidInput naming the field", () =>
    Effect.gen(function* () {
      const id = yield* StreamId.validate("account-42")
      expectTypeOf(id).toEqualTypeOf<StreamId.StreamId>()
      assert.strictEqual(id, "account-42")
      const bad = yield* Effect.flip(StreamId.validate("has space", "target"))
      assert.instanceOf(bad, InvalidInput)
      assert.strictEqual(bad.field, "target")
      const category = yield* Effect.flip(StreamId.validateCategory("with-dash"))
      assert.strictEqual(category.field, "category")
      assert.strictEqual<unknown>(StreamId.parse("ok-1"), "ok-1")
      assert.instanceOf(StreamId.parse(""), InvalidInput)
      assert.instanceOf(StreamId.parseCategory("1x"), InvalidInput)
      // An aggregate's stream id: the category, then the id, then the whole id, in that order.
      assert.strictEqual(yield* StreamId.forAggregate("account", "42"), "account-42")
      assert.strictEqual((yield* Effect.flip(StreamId.forAggregate("bad-cat", "42"))).field, "category")
      assert.strictEqual((yield* Effect.flip(StreamId.forAggregate("account", "a b"))).field, "id")
      assert.strictEqual((yield* Effect.flip(StreamId.forAggregate("account", "x".repeat(250)))).field, "streamId")
      const subscription = yield* Effect.flip(SubscriptionId.validate("s".repeat(256)))
      assert.strictEqual(subscription.field, "subscriptionId")
    })
  )

  it("outputs carry the brands; inputs take plain strings", () => {
    expectTypeOf<RecordedEvent["streamId"]>().toEqualTypeOf<StreamId.StreamId>()
    expectTypeOf<RecordedEvent["category"]>().toEqualTypeOf<StreamId.Category>()
    expectTypeOf<CommittedEvents["streamId"]>().toEqualTypeOf<StreamId.StreamId>()
    expectTypeOf<Subscription.Subscription["subscriptionId"]>().toEqualTypeOf<SubscriptionId.SubscriptionId>()
    expectTypeOf<EventStore.StorableAppend["streamId"]>().toEqualTypeOf<StreamId.StreamId>()
    expectTypeOf(EventStore.append).parameter(0).toEqualTypeOf<string>()
    expectTypeOf(EventStore.append).parameter(1).toEqualTypeOf<string>()
    expectTypeOf(EventStore.readStream).parameter(0).toEqualTypeOf<string>()
    expectTypeOf(EventStore.readCategory).parameter(0).toEqualTypeOf<string>()
    // A plain string is not a StreamId: only validation (or a store's read) brands one.
    expectTypeOf<string>().not.toMatchTypeOf<StreamId.StreamId>()
  })

  it.effect("events read back carry ids that pass the Schemas", () =>
    Effect.gen(function* () {
      const streamId: string = "brandcheck-1"
      const committed = yield* EventStore.append(streamId, "brandcheck", ExpectedVersion.NoStream, [
        { eventType: "brandcheck.made", schemaVersion: 1, data: {} }
      ])
      assert.isTrue(Schema.is(StreamId.StreamId)(committed.streamId))
      const events = [
        ...(yield* Stream.runCollect(EventStore.readStream(streamId))),
        ...(yield* Stream.runCollect(EventStore.readCategory("brandcheck")))
      ]
      assert.strictEqual(events.length, 2)
      for (const event of events) {
        assert.deepStrictEqual(Schema.decodeUnknownSync(Schema.Struct({ streamId: StreamId.StreamId, category: StreamId.Category }))(event), {
          streamId: "brandcheck-1",
          category: "brandcheck"
        })
      }
    }).pipe(Effect.provide(InMemory.layer))
  )

  it.scoped("a subscription's id is validated and branded", () =>
    Effect.gen(function* () {
      const refused = yield* Effect.flip(Subscription.make({ subscriptionId: "" }))
      assert.strictEqual(refused._tag, "InvalidInput")
      if (refused._tag === "InvalidInput") assert.strictEqual(refused.field, "subscriptionId")
      const subscription = yield* Subscription.make({ subscriptionId: "brand-sub" })
      assert.strictEqual(subscription.subscriptionId, "brand-sub")
      assert.isTrue(Schema.is(SubscriptionId.SubscriptionId)(subscription.subscriptionId))
    }).pipe(Effect.provide(InMemory.layer))
  )
})

const Made = Schema.TaggedStruct("Made", { n: Schema.Number })
const Counter = Aggregate.make({
  category: "counter",
  events: Made,
  initial: { total: 0 },
  apply: (state, event) => ({ total: state.total + event.n })
})
const Named = Schema.TaggedStruct("Named", { name: Schema.String })
const Label = Aggregate.make({
  category: "label",
  events: Named,
  initial: { name: "" },
  apply: (_, event) => ({ name: event.name })
})

describe("EventStore.saveMany", () => {
  it.effect("returns each root, in order, typed as the root it was given, saved", () =>
    Effect.gen(function* () {
      const counter = AggregateRoot.record(AggregateRoot.make(Counter, "c1"), Made.make({ n: 2 }), Made.make({ n: 3 }))
      const label = AggregateRoot.record(AggregateRoot.make(Label, "l1"), Named.make({ name: "x" }))
      const untouched = AggregateRoot.make(Counter, "c2")
      const [savedCounter, savedLabel, same] = yield* EventStore.saveMany([counter, label, untouched])
      expectTypeOf(savedCounter).toEqualTypeOf<typeof counter>()
      expectTypeOf(savedLabel).toEqualTypeOf<typeof label>()
      assert.strictEqual(savedCounter.state.total, 5)
      assert.strictEqual(savedCounter.version, 2)
      assert.strictEqual(savedCounter.pending.length, 0)
      assert.strictEqual(savedLabel.state.name, "x")
      assert.strictEqual(savedLabel.version, 1)
      assert.strictEqual(same, untouched)
      const loaded = yield* EventStore.load(Counter, "c1")
      assert.isTrue(Option.isSome(loaded))
      if (Option.isSome(loaded)) assert.strictEqual(loaded.value.state.total, 5)
    }).pipe(Effect.provide(InMemory.layer))
  )
})
