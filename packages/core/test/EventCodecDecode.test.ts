/**
 * The codec's compiled decoder (plain checks for structs of simple fields)
 * must give exactly what the Schema decode gives: the same value, the same
 * refusals with the same message, and no prototype from stored keys.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as EventCodec from "../src/EventCodec.js"
import type { JsonObject } from "../src/RecordedEvent.js"

const Line = Schema.Struct({ sku: Schema.String, quantity: Schema.Int.pipe(Schema.positive()) })
const Added = Schema.TaggedStruct("Added", {
  name: Schema.String,
  amount: Schema.Number,
  paid: Schema.Boolean,
  currency: Schema.Literal("EUR", "USD"),
  kind: Schema.Literal("line"),
  line: Line
})
const Noted = Schema.TaggedStruct("Noted", { note: Schema.optional(Schema.String) })
const Loose = Schema.TaggedStruct("Loose", { a: Schema.Number }).annotations({
  parseOptions: { onExcessProperty: "preserve" }
})
const Events = Schema.Union(Added, Noted, Loose)
const codec = EventCodec.make("shop", Events)

const stored = (eventType: string, data: JsonObject) => ({
  streamId: "shop-1",
  streamVersion: 1,
  globalPosition: 1n,
  eventType,
  schemaVersion: 1,
  data
})

/** What the Schema alone makes of the stored data, as the codec decoded it before it compiled anything. */
const bySchema = (member: Schema.Schema.AnyNoContext, tag: string, data: JsonObject) =>
  Either.mapLeft(Schema.decodeUnknownEither(member)({ ...data, _tag: tag }), (e) =>
    ParseResult.TreeFormatter.formatErrorSync(e)
  )

const good = { name: "n", amount: 1.5, paid: true, currency: "EUR", kind: "line", line: { sku: "s", quantity: 2 } }

describe("EventCodec decoding", () => {
  it("decodes simple structs to the Schema's value: declared keys in order, excess dropped, _tag set", () => {
    const data = { extra: 1, ...good, _tag: "Other", line: { quantity: 2, sku: "s", more: true } }
    const decoded = codec.decodeEither(stored("shop.added", data))
    const expected = bySchema(Added, "Added", data)
    assert.isTrue(Either.isRight(decoded) && Either.isRight(expected))
    if (Either.isRight(decoded) && Either.isRight(expected)) {
      assert.deepStrictEqual(decoded.right, expected.right)
      assert.deepStrictEqual(Object.keys(decoded.right), Object.keys(expected.right))
      assert.deepStrictEqual(Object.keys(decoded.right), ["_tag", "name", "amount", "paid", "currency", "kind", "line"])
      assert.strictEqual(decoded.right._tag, "Added")
      assert.notStrictEqual((decoded.right as { line: unknown }).line, data.line)
    }
  })

  it("refuses what the Schema refuses, with the Schema's message", () => {
    const bad: ReadonlyArray<JsonObject> = [
      { ...good, name: 1 },
      { ...good, amount: "1" },
      { ...good, paid: null },
      { ...good, currency: "GBP" },
      { ...good, line: { sku: "s", quantity: 1.5 } },
      { ...good, line: { sku: "s", quantity: -1 } },
      { ...good, line: [] },
      { name: "n", amount: 1, paid: true, currency: "EUR", kind: "line" }
    ]
    for (const data of bad) {
      const decoded = codec.decodeEither(stored("shop.added", data))
      const expected = bySchema(Added, "Added", data)
      assert.isTrue(Either.isLeft(decoded), JSON.stringify(data))
      assert.isTrue(Either.isLeft(expected))
      if (Either.isLeft(decoded) && Either.isLeft(expected)) {
        assert.strictEqual(decoded.left._tag, "EventDecodeError")
        assert.strictEqual(decoded.left.issue, expected.left)
      }
    }
  })

  it("a stored __proto__ key never becomes a prototype", () => {
    const data: JsonObject = JSON.parse(`{"__proto__": {"polluted": true}, ${JSON.stringify(good).slice(1)}`)
    const decoded = codec.decodeEither(stored("shop.added", data))
    assert.isTrue(Either.isRight(decoded))
    if (Either.isRight(decoded)) {
      assert.strictEqual(Object.getPrototypeOf(decoded.right), Object.prototype)
      assert.isUndefined((decoded.right as { polluted?: unknown }).polluted)
      assert.isFalse(Object.hasOwn(decoded.right, "__proto__"))
    }
  })

  it("shapes it does not compile (optional fields, parse options) decode as the Schema does", () => {
    for (const data of [{}, { note: "x" }, { note: "x", more: 1 }]) {
      const decoded: unknown = Either.getOrUndefined(codec.decodeEither(stored("shop.noted", data)))
      const expected: unknown = Either.getOrUndefined(bySchema(Noted, "Noted", data))
      assert.isDefined(expected)
      assert.deepStrictEqual(decoded, expected)
    }
    const loose = codec.decodeEither(stored("shop.loose", { a: 1, kept: "yes" }))
    assert.deepStrictEqual(loose, Either.right({ a: 1, kept: "yes", _tag: "Loose" }))
    const noted = codec.decodeEither(stored("shop.noted", { note: 1 }))
    assert.isTrue(Either.isLeft(noted))
  })
})
