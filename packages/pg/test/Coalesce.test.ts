/**
 * The coalescer under the Postgres append path: natural batching (no timer),
 * each input's own result, inputs a batch gives back run alone in their
 * callers' fibers, interruption before and after a batch goes out.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
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
      alone: (n) => Effect.succeed(n),
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
      const coalescer = yield* Coalesce.make<number, number, string>({ workers: 1, max: 8, run: () => Effect.die("boom"), alone: Effect.succeed })
      const exit = yield* Effect.exit(coalescer.submit(1))
      assert.isTrue(Exit.isFailure(exit) && exit.cause._tag === "Die")
    }))

  it.scoped("an input its batch gives back runs alone in its caller's own fiber; the worker takes the next batch at once", () =>
    Effect.gen(function* () {
      const who = yield* FiberRef.make("worker")
      const batches: Array<ReadonlyArray<number>> = []
      const aloneGate = yield* Deferred.make<void>()
      const interrupted: Array<number> = []
      // Inputs of 100 and more are given back; run alone, they wait for `aloneGate`, and 200 and more fail.
      const coalescer = yield* Coalesce.make<number, string, string>({
        workers: 1,
        max: 64,
        run: (inputs) =>
          Effect.sync(() => {
            batches.push(inputs)
            return inputs.map((n) => (n >= 100 ? Coalesce.alone : Exit.succeed(`batch ${n}`)))
          }),
        alone: (n) =>
          Deferred.await(aloneGate).pipe(
            Effect.zipRight(FiberRef.get(who)),
            Effect.flatMap((w) => (n >= 200 ? Effect.fail(`alone ${n} failed in ${w}`) : Effect.succeed(`alone ${n} in ${w}`))),
            Effect.onInterrupt(() => Effect.sync(() => interrupted.push(n)))
          )
      })
      const slow = yield* Effect.fork(Effect.locally(coalescer.submit(100), who, "caller 100"))
      const failing = yield* Effect.fork(Effect.either(Effect.locally(coalescer.submit(200), who, "caller 200")))
      const dropped = yield* Effect.fork(coalescer.submit(300))
      while (batches.flat().length < 3) yield* Effect.yieldNow()
      // The three wait for `aloneGate` in their own fibers: the worker is free.
      assert.strictEqual(yield* coalescer.submit(1), "batch 1")
      assert.isTrue(Option.isNone(yield* Fiber.poll(slow)))
      yield* Fiber.interrupt(dropped)
      assert.deepStrictEqual(interrupted, [300])
      yield* Deferred.succeed(aloneGate, undefined)
      assert.strictEqual(yield* Fiber.join(slow), "alone 100 in caller 100")
      const failed = yield* Fiber.join(failing)
      assert.isTrue(failed._tag === "Left" && failed.left === "alone 200 failed in caller 200")
      assert.deepStrictEqual(batches.flat().sort(), [1, 100, 200, 300])
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
