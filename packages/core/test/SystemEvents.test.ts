/**
 * Only mire's own system events (`$StreamDeleted`) are system events for
 * projections: an event with another `$…` type, stored by 0.1 (which did not
 * reserve `$`), is handled as before the upgrade, by raw and aggregate
 * projections alike; a tombstone still goes to `onStreamDeleted` only.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import * as Aggregate from "../src/Aggregate.js"
import * as EventStore from "../src/EventStore.js"
import * as Projection from "../src/Projection.js"
import type { RecordedEvent } from "../src/RecordedEvent.js"
import * as StreamId from "../src/StreamId.js"

const recorded = (eventType: string, data: RecordedEvent["data"], streamVersion = 1): RecordedEvent => ({
  eventId: "00000000-0000-4000-8000-000000000001",
  streamId: StreamId.StreamId.make("legacy-1"),
  category: StreamId.Category.make("legacy"),
  aggregateId: "1",
  streamVersion,
  globalPosition: 1n,
  transactionId: 10n,
  eventType,
  schemaVersion: 1,
  data,
  metadata: {},
  recordedAt: new Date(0)
})

const run = <E>(projection: Projection.Projection<never, E>, event: RecordedEvent) =>
  Effect.flatMap(
    Either.match(projection.process(event), { onLeft: (error) => Effect.die(error), onRight: (effect) => Effect.succeed(effect) }),
    (effect) => Effect.orDie(effect)
  )

describe("system events", () => {
  it("only $StreamDeleted is a system event", () => {
    assert.isTrue(EventStore.isSystemEvent({ eventType: EventStore.streamDeletedType }))
    assert.isFalse(EventStore.isSystemEvent({ eventType: "$Legacy" }))
    assert.isFalse(EventStore.isSystemEvent({ eventType: "legacy.opened" }))
  })

  it.effect("a raw projection handles a stored `$…` event of 0.1, and hands a tombstone to onStreamDeleted only", () =>
    Effect.gen(function* () {
      const handled: Array<string> = []
      const deleted: Array<number> = []
      const projection = Projection.atLeastOnce({
        subscriptionId: "legacy-raw",
        categories: ["legacy"],
        handle: ({ recorded }) => Effect.sync(() => handled.push(recorded.eventType)),
        onStreamDeleted: ({ deletedVersion }) => Effect.sync(() => deleted.push(deletedVersion))
      })
      yield* run(projection, recorded("$Legacy", { n: 1 }))
      yield* run(projection, recorded(EventStore.streamDeletedType, { deletedVersion: 1 }, 2))
      assert.deepStrictEqual(handled, ["$Legacy"])
      assert.deepStrictEqual(deleted, [1])
    }))

  it.effect("an aggregate projection decodes and handles a stored `$…` event of its own", () =>
    Effect.gen(function* () {
      const Legacy = Schema.TaggedStruct("$Legacy", { n: Schema.Number })
      const Opened = Schema.TaggedStruct("Opened", { owner: Schema.String })
      const Account = Aggregate.make({
        category: "legacy",
        events: Schema.Union(Legacy, Opened),
        // Stored by 0.1 under the type `$Legacy`.
        definitions: { $Legacy: { type: "$Legacy" } },
        initial: { n: 0 },
        apply: (state, event) => (event._tag === "$Legacy" ? { n: state.n + event.n } : state)
      })
      const handled: Array<string> = []
      const projection = Projection.atLeastOnce({
        subscriptionId: "legacy-aggregate",
        aggregate: Account,
        handle: ({ event }) => Effect.sync(() => handled.push(event._tag))
      })
      yield* run(projection, recorded("$Legacy", { n: 2 }))
      assert.deepStrictEqual(handled, ["$Legacy"])
    }))
})
