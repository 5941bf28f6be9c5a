/**
 * Where a subscription starts and resets: the conformance suite on the
 * in-memory store, and the pure parts (`Lease.decideReset`,
 * `Subscription.parseStart`, `Subscription.validateStart`).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { startSuite } from "@mire/core/conformance"
import * as InMemory from "../src/InMemory.js"
import * as Lease from "../src/Lease.js"
import * as Subscription from "../src/Subscription.js"

startSuite("in-memory", InMemory.layer)

describe("Lease.decideReset", () => {
  const lease = (workerId: string | null, leasedUntil: number): Lease.LeaseStatus => ({
    subscriptionId: "s",
    workerId,
    fenceToken: 7n,
    leasedUntil: new Date(leasedUntil)
  })

  it("no row: Unknown, whatever force says", () => {
    assert.deepStrictEqual(Lease.decideReset(undefined, 0, false), { _tag: "Unknown" })
    assert.deepStrictEqual(Lease.decideReset(undefined, 0, true), { _tag: "Unknown" })
  })

  it("a live lease refuses an unforced reset", () => {
    const live = lease("w1", 1_000)
    assert.deepStrictEqual(Lease.decideReset(live, 999, false), { _tag: "Held", lease: live })
  })

  it("a forced reset of a live lease bumps the fence and names the holder it displaced", () => {
    const live = lease("w1", 1_000)
    assert.deepStrictEqual(Lease.decideReset(live, 999, true), { _tag: "Reset", fenceToken: 8n, displaced: live })
  })

  it("an expired, released or never-held lease is reset without force, and its fence is still bumped", () => {
    for (const free of [lease("w1", 1_000), lease(null, 5_000), lease("w1", 0)]) {
      assert.deepStrictEqual(Lease.decideReset(free, free.workerId === null ? 0 : 1_000, false), {
        _tag: "Reset",
        fenceToken: 8n,
        displaced: undefined
      })
    }
  })
})

describe("Subscription.parseStart", () => {
  const parse = (text: string) => Effect.runSync(Effect.either(Subscription.parseStart(text)))

  it("start, head, positions and ISO 8601 times", () => {
    assert.deepStrictEqual(parse("start"), Either.right("start"))
    assert.deepStrictEqual(parse(" head "), Either.right("head"))
    assert.deepStrictEqual(parse("1200"), Either.right({ position: 1200n }))
    assert.deepStrictEqual(parse("98765432109876543210"), Either.right({ position: 98765432109876543210n }))
    assert.deepStrictEqual(parse("2026-12-01T12:00:00Z"), Either.right({ time: new Date("2026-12-01T12:00:00Z") }))
    assert.deepStrictEqual(parse("2026-12-01T12:00:00.250+02:00"), Either.right({ time: new Date("2026-12-01T10:00:00.250Z") }))
    assert.deepStrictEqual(parse("2026-12-01"), Either.right({ time: new Date("2026-12-01") }))
  })

  it("anything else is InvalidInput", () => {
    for (const text of ["", "0", "-5", "1.5", "yesterday", "2026-13-45", "12:00", "2026-12-01T25:00:00Z", "head;drop", "0x10"]) {
      const parsed = parse(text)
      assert.isTrue(Either.isLeft(parsed) && parsed.left._tag === "InvalidInput", text)
    }
  })
})

describe("Subscription.validateStart", () => {
  const valid = (from: Subscription.StartFrom) => Either.isRight(Effect.runSync(Effect.either(Subscription.validateStart(from))))

  it("a position is a positive bigint, a time a valid Date", () => {
    assert.isTrue(valid("start"))
    assert.isTrue(valid("head"))
    assert.isTrue(valid({ position: 1n }))
    assert.isTrue(valid({ time: new Date(0) }))
    assert.isFalse(valid({ position: 0n }))
    assert.isFalse(valid({ position: -1n }))
    assert.isFalse(valid({ time: new Date(Number.NaN) }))
  })
})
