import { assert, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as TestClock from "effect/TestClock"
import * as InMemory from "../src/InMemory.js"
import * as SagaRunner from "../src/SagaRunner.js"
import * as SagaStore from "../src/SagaStore.js"
import { sagaClaimSuite, sagaSuite, startWorker, world } from "@mire/core/conformance"

sagaSuite("in-memory", InMemory.layer)
sagaClaimSuite("in-memory", InMemory.layer, { live: false })

it.scoped("in-memory saga timeouts run on logical time (TestClock)", () =>
  Effect.gen(function* () {
    const store = yield* SagaStore.SagaStore
    const w = world({ shipTimeout: "10 minutes" })
    // Notifications drive the work; long intervals keep the number of timers TestClock must step through small.
    const worker = yield* startWorker(w, "w1", undefined, {
      pollInterval: "10 seconds",
      projections: { pollInterval: "10 seconds", leaseTtl: "10 minutes", leaseRecheckInterval: "1 minute" }
    })
    yield* w.place("noship", 10)
    const id = `${w.Order.category}-noship`
    const statusOf = Effect.map(SagaRunner.status(w.fulfilment), (all) => all.find((s) => s.instanceId === id))
    // Everything up to the wait on shipping happens on notifications, with no time passing.
    for (let i = 0; i < 200; i++) {
      const s = yield* statusOf
      if (s?.status === "waiting" && s.currentStep === "ship") break
      yield* TestClock.adjust("10 millis")
    }
    assert.strictEqual((yield* statusOf)?.currentStep, "ship")
    yield* TestClock.adjust("9 minutes")
    assert.strictEqual((yield* statusOf)?.status, "waiting", "not timed out before its deadline")
    yield* TestClock.adjust("2 minutes")
    for (let i = 0; i < 200 && (yield* statusOf)?.status !== "failed"; i++) yield* TestClock.adjust("100 millis")
    assert.strictEqual((yield* statusOf)?.status, "failed")
    const steps = (yield* store.history(w.fulfilment.name, id)).map((h) => `${h.step}:${h.outcome}`)
    assert.deepStrictEqual(steps.slice(-3), ["ship:timed-out", "charge-payment:compensated", "reserve-stock:compensated"])
    yield* worker.stop
  }).pipe(Effect.provide(InMemory.layer))
)
