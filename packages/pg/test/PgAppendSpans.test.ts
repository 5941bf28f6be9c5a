/**
 * An append's span is handed to the store, not put in the context
 * (`Storage.append`'s `span`): the statements an append runs in its
 * caller's fiber are still children of its `EventStore.appendMany` span.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import { unique } from "@mire/core/conformance"
import { storeLayer } from "./utils.js"
import { traced } from "../../../test/spans.js"

const ev = { eventType: "span.e", schemaVersion: 1, data: {} }

/** The names of each statement's parent span, in the order the statements started. */
const statementParents = (spans: ReadonlyArray<Tracer.Span>) => {
  const byId = new Map(spans.map((s) => [s.spanId, s]))
  return spans
    .filter((s) => s.name === "sql.execute")
    .map((s) => Option.getOrUndefined(Option.map(s.parent, (p) => byId.get(p.spanId)?.name ?? "(outside)")))
}

describe("append spans: postgres", () => {
  layer(storeLayer(), { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.effect("inside EventStore.transaction, the append's statement is a child of EventStore.appendMany", () =>
      Effect.gen(function* () {
        const category = unique("sp")
        const { spans } = yield* traced(
          EventStore.transaction(EventStore.append(`${category}-1`, category, ExpectedVersion.NoStream, [ev]))
        )
        assert.include(statementParents(spans), "EventStore.appendMany")
      })
    )

    it.effect("an appendMany of two streams: its statement is a child of EventStore.appendMany", () =>
      Effect.gen(function* () {
        const category = unique("sp")
        const { spans } = yield* traced(
          EventStore.appendMany([
            { streamId: `${category}-1`, category, expected: ExpectedVersion.NoStream, events: [ev] },
            { streamId: `${category}-2`, category, expected: ExpectedVersion.NoStream, events: [ev] }
          ])
        )
        assert.deepStrictEqual(statementParents(spans), ["EventStore.appendMany"])
      })
    )

    it.effect("a refused coalesced append: the statement that reads why is a child of EventStore.appendMany", () =>
      Effect.gen(function* () {
        const category = unique("sp")
        yield* EventStore.append(`${category}-1`, category, ExpectedVersion.NoStream, [ev])
        const { value, spans } = yield* traced(
          Effect.either(EventStore.append(`${category}-1`, category, ExpectedVersion.Exact(5), [ev]))
        )
        assert.isTrue(value._tag === "Left" && value.left._tag === "ConcurrencyConflict")
        // The coalesced statement is its worker's (forked with the store, so traced outside this
        // effect), shared by the calls of its batch; the read of the refusal is this append's.
        assert.deepStrictEqual(statementParents(spans), ["EventStore.appendMany"])
      })
    )
  })
})
