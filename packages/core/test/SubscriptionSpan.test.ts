/**
 * The `Subscription.poll` span: nested where the poll runs, with its
 * attributes, and ended with the number of events delivered, never the
 * events (a span keeps the exit it ends with: a page kept by it lives on in
 * the old generation, measured at about half of a catch-up's Node CPU).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as EventStore from "../src/EventStore.js"
import * as ExpectedVersion from "../src/ExpectedVersion.js"
import * as InMemory from "../src/InMemory.js"
import * as Subscription from "../src/Subscription.js"
import { unique } from "@mire/core/conformance"
import { memoryRaw } from "./memoryRaw.js"
import { assertEndedWithCount, traced } from "../../../test/spans.js"

const store = memoryRaw.pipe(Layer.provideMerge(InMemory.layer))

describe("Subscription.poll span", () => {
  it.scoped("is a child of the caller's span, carries its attributes, and ends with the count of events delivered", () =>
    Effect.gen(function* () {
      const category = unique("pollspan")
      const ev = { eventType: `${category}.e`, schemaVersion: 1, data: { n: 1 } }
      yield* EventStore.append(`${category}-1`, category, ExpectedVersion.NoStream, [ev, ev, ev])
      const subscriptionId = unique("pollspan-")
      const sub = yield* Subscription.make({ subscriptionId, categories: [category] })
      const { spans, value } = yield* traced(Effect.withSpan(Effect.zip(sub.poll, sub.poll), "caller"))
      assert.deepStrictEqual(
        value.map((events) => events.length),
        [3, 0]
      )
      const polls = spans.filter((s) => s.name === "Subscription.poll")
      assert.strictEqual(polls.length, 2)
      for (const [span, delivered] of polls.map((s, i) => [s, i === 0 ? 3 : 0] as const)) {
        assert.strictEqual(span.attributes.get("mire.subscription_id"), subscriptionId)
        assert.strictEqual(span.attributes.get("mire.batch_size"), delivered)
        assertEndedWithCount(span, "caller", delivered)
      }
    }).pipe(Effect.provide(store)))
})
