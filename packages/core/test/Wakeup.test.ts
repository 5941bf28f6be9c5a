/**
 * The wake-up queue of polling workers, on logical time.
 */
import { assert, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as Wakeup from "../src/internal/wakeup.js"

it.scoped("a wait ends at a notification, or at its timeout; a burst of notifications ends one wait", () =>
  Effect.gen(function* () {
    const source = yield* Queue.unbounded<string>()
    const seen: Array<string> = []
    const wakeup = yield* Wakeup.make(Stream.fromQueue(source), {
      capacity: 64,
      retry: "1 second",
      onWakeup: (a) => Effect.sync(() => void seen.push(a))
    })
    yield* Effect.yieldNow()

    // Ended by a notification, with no time passing.
    const notified = yield* Effect.fork(wakeup.wait("10 seconds"))
    yield* Effect.yieldNow()
    assert.isTrue(Option.isNone(yield* Fiber.poll(notified)))
    yield* Queue.offer(source, "a")
    yield* Fiber.join(notified)
    assert.deepStrictEqual(seen, ["a"])

    // Ended by its timeout.
    const timed = yield* Effect.fork(wakeup.wait("10 seconds"))
    yield* TestClock.adjust("9 seconds")
    assert.isTrue(Option.isNone(yield* Fiber.poll(timed)))
    yield* TestClock.adjust("1 second")
    yield* Fiber.join(timed)

    // A burst ends one wait; the next one waits again.
    yield* Queue.offerAll(source, ["b", "c", "d"])
    yield* Effect.repeat(Effect.yieldNow(), { until: () => seen.length === 4 })
    yield* wakeup.wait("10 seconds")
    const after = yield* Effect.fork(wakeup.wait("10 seconds"))
    yield* Effect.yieldNow()
    assert.isTrue(Option.isNone(yield* Fiber.poll(after)), "the burst was consumed by the first wait")
    yield* TestClock.adjust("10 seconds")
    yield* Fiber.join(after)
  })
)
