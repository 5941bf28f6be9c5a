/**
 * The coalescer under the Postgres append path: natural batching (no timer),
 * each input's own result, interruption before and after a batch goes out.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import * as Coalesce from "../src/internal/coalesce.js"

/** A coalescer whose batches wait for `gate` and are recorded; input n fails when n is negative. */
const gated = (workers: number, max: number) =>
  Effect.gen(function* () {
    const batches: Array<ReadonlyArray<number>> = []
    const gate = yield* Deferred.make<void>()
    const coalescer = yield* Coalesce.make<number, number, string>({
      workers,
      max,
      run: (inputs) =>
        Effect.zipRight(
          Effect.sync(() => batches.push(inputs)),
          Effect.as(Deferred.await(gate), inputs.map((n) => (n < 0 ? Exit.fail(`bad ${n}`) : Exit.succeed(n * 10))))
        )
    })
    return { batches, gate, coalescer }
  })

describe("Coalesce", () => {
  it.scoped("a call that finds a worker free goes out alone at once; calls waiting meanwhile go out together", () =>
    Effect.gen(function* () {
      const { batches, gate, coalescer } = yield* gated(1, 64)
      const first = yield* Effect.fork(coalescer.submit(1))
      while (batches.length === 0) yield* Effect.yieldNow()
      const rest = yield* Effect.fork(Effect.forEach([2, -3, 4], (n) => Effect.either(coalescer.submit(n)), { concurrency: "unbounded" }))
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      yield* Deferred.succeed(gate, undefined)
      assert.strictEqual(yield* Fiber.join(first), 10)
      const results = yield* Fiber.join(rest)
      assert.deepStrictEqual(batches, [[1], [2, -3, 4]])
      assert.deepStrictEqual(
        results.map((r) => (r._tag === "Right" ? r.right : r.left)),
        [20, "bad -3", 40]
      )
    }))

  it.scoped("a batch carries at most `max` calls; free workers take the rest", () =>
    Effect.gen(function* () {
      const { batches, gate, coalescer } = yield* gated(2, 2)
      const all = yield* Effect.fork(Effect.forEach([1, 2, 3, 4, 5], (n) => coalescer.submit(n), { concurrency: "unbounded" }))
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      yield* Deferred.succeed(gate, undefined)
      assert.deepStrictEqual(yield* Fiber.join(all), [10, 20, 30, 40, 50])
      assert.isTrue(batches.every((b) => b.length <= 2))
      assert.deepStrictEqual(batches.flat().sort(), [1, 2, 3, 4, 5])
    }))

  it.scoped("a caller interrupted before its batch went out is left out of it", () =>
    Effect.gen(function* () {
      const { batches, gate, coalescer } = yield* gated(1, 64)
      const first = yield* Effect.fork(coalescer.submit(1))
      while (batches.length === 0) yield* Effect.yieldNow()
      const left = yield* Effect.fork(coalescer.submit(2))
      const kept = yield* Effect.fork(coalescer.submit(3))
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      yield* Fiber.interrupt(left)
      yield* Deferred.succeed(gate, undefined)
      assert.strictEqual(yield* Fiber.join(first), 10)
      assert.strictEqual(yield* Fiber.join(kept), 30)
      assert.deepStrictEqual(batches, [[1], [3]])
    }))

  it.scoped("a defect of a batch reaches each of its callers", () =>
    Effect.gen(function* () {
      const coalescer = yield* Coalesce.make<number, number, string>({ workers: 1, max: 8, run: () => Effect.die("boom") })
      const exit = yield* Effect.exit(coalescer.submit(1))
      assert.isTrue(Exit.isFailure(exit) && exit.cause._tag === "Die")
    }))

  it.effect("closing the scope interrupts callers in flight and waiting: none waits forever", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const { batches, coalescer } = yield* Scope.extend(gated(1, 64), scope)
      const inFlight = yield* Effect.fork(coalescer.submit(1))
      while (batches.length === 0) yield* Effect.yieldNow()
      const waiting = yield* Effect.fork(coalescer.submit(2))
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      yield* Scope.close(scope, Exit.void)
      const a = yield* Fiber.await(inFlight)
      const b = yield* Fiber.await(waiting)
      assert.isTrue(Exit.isInterrupted(a))
      assert.isTrue(Exit.isInterrupted(b))
    }))
})
