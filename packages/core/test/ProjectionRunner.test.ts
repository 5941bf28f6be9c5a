/**
 * The runner's retry schedule, asserted as a schedule (its delays, computed
 * without waiting), and the runner's use of it on logical time (`TestClock`):
 * no assertion here depends on how busy the machine is.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as EventStore from "../src/EventStore.js"
import * as ExpectedVersion from "../src/ExpectedVersion.js"
import * as InMemory from "../src/InMemory.js"
import * as Lease from "../src/Lease.js"
import * as Projection from "../src/Projection.js"
import * as ProjectionRunner from "../src/ProjectionRunner.js"

/**
 * The delays `schedule` waits after each of `failures` failures, in
 * milliseconds, computed without waiting. `Schedule.run` emits one output per
 * recurrence and, when the schedule ends before the inputs do, a last output
 * for the step that ended it (no wait follows it): that one is dropped.
 */
const delaysOf = (schedule: Schedule.Schedule<unknown, unknown>, failures: number) =>
  Effect.map(Schedule.run(Schedule.delays(schedule), 0, Array.from({ length: failures }, (_, i) => i)), (outputs) => {
    const delays = Chunk.toReadonlyArray(outputs).map(Duration.toMillis)
    return delays.length < failures ? delays.slice(0, -1) : delays
  })

describe("ProjectionRunner retry schedule", () => {
  it.effect("defaultRetry: exponential from 100 ms, doubling, each delay jittered within 0.8-1.2", () =>
    Effect.gen(function* () {
      for (let run = 0; run < 20; run++) {
        const delays = yield* delaysOf(ProjectionRunner.defaultRetry, 8)
        assert.strictEqual(delays.length, 8)
        delays.forEach((delay, i) => {
          const base = 100 * 2 ** i
          assert.isTrue(delay >= 0.8 * base && delay <= 1.2 * base, `delay ${i}: ${delay} ms not within 0.8-1.2 x ${base} ms`)
        })
      }
    }))

  it.effect("retrySchedule: the given delays, maxAttempts - 1 of them; defaults 5 attempts of defaultRetry", () =>
    Effect.gen(function* () {
      const exponential = Schedule.exponential("40 millis", 2)
      assert.deepStrictEqual(yield* delaysOf(ProjectionRunner.retrySchedule({ retry: exponential, maxAttempts: 4 }), 10), [40, 80, 160])
      assert.deepStrictEqual(yield* delaysOf(ProjectionRunner.retrySchedule({ retry: exponential, maxAttempts: 1 }), 10), [])
      assert.deepStrictEqual(yield* delaysOf(ProjectionRunner.retrySchedule({ retry: exponential, maxAttempts: 0 }), 10), [])
      const defaults = yield* delaysOf(ProjectionRunner.retrySchedule({}), 10)
      assert.strictEqual(defaults.length, 4, "5 attempts: 4 delays")
      defaults.forEach((delay, i) => {
        assert.isTrue(delay >= 0.8 * 100 * 2 ** i && delay <= 1.2 * 100 * 2 ** i, `delay ${i}: ${delay} ms`)
      })
    }))
})

describe("ProjectionRunner retries on logical time", () => {
  for (const delivery of ["at-least-once", "transactional"] as const) {
    it.scoped(`${delivery}: attempts of a failing handler are exactly the schedule's delays apart, then it stops`, () =>
      Effect.gen(function* () {
        const category = `rtc${delivery === "transactional" ? "tx" : "al"}`
        const attempts: Array<number> = []
        const handle = ({ recorded }: Projection.HandledEvent<{ readonly streamId: string }>) =>
          recorded.streamId === `${category}-poison`
            ? Effect.zipRight(
                Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => void attempts.push(now))),
                Effect.fail("boom" as const)
              )
            : Effect.void
        const subscriptionId = `sub-${category}`
        const projection =
          delivery === "transactional"
            ? Projection.transactional({ subscriptionId, categories: [category], handle })
            : Projection.atLeastOnce({ subscriptionId, categories: [category], handle })
        // Appends wake the subscription; long intervals keep the timers TestClock steps through few.
        const runner = yield* ProjectionRunner.run([projection], {
          workerId: "logical",
          pollInterval: "10 seconds",
          leaseTtl: "10 minutes",
          leaseRecheckInterval: "1 minute",
          retry: Schedule.exponential("40 millis", 2),
          maxAttempts: 4
        })
        yield* EventStore.append(`${category}-poison`, category, ExpectedVersion.NoStream, [
          { eventType: `${category}.marked`, schemaVersion: 1, data: {} }
        ])
        const stopped = Effect.map(runner.status, (all) => all[0]!.state === "failed")
        for (let i = 0; i < 500 && !(yield* stopped); i++) yield* TestClock.adjust("5 millis")
        const status = (yield* runner.status)[0]!
        assert.strictEqual(status.state, "failed")
        const failure = Option.getOrThrow(status.failure)
        assert.strictEqual(failure.streamId, `${category}-poison`)
        assert.strictEqual(failure.attempts, 4)
        assert.strictEqual(attempts.length, 4)
        assert.deepStrictEqual(
          attempts.slice(1).map((t, i) => t - attempts[i]!),
          [40, 80, 160],
          "the gaps between attempts, on the test clock"
        )
      }).pipe(Effect.provide(InMemory.layer)))
  }
})

describe("ProjectionRunner failover on logical time", () => {
  it.scoped("a leader that dies without releasing is replaced within leaseTtl + leaseRecheckInterval", () =>
    Effect.gen(function* () {
      const leases = yield* Lease.LeaseStoreTag
      const projection = Projection.atLeastOnce({ subscriptionId: "sub-failover", categories: ["rtcfo"], handle: () => Effect.void })
      const options = { pollInterval: "10 seconds", leaseTtl: "1 second", leaseRecheckInterval: "300 millis" } as const
      const isLeader = (runner: ProjectionRunner.ProjectionRunner) => Effect.map(runner.status, (all) => all[0]!.state === "leader")
      const step = <E>(until: Effect.Effect<boolean, E>) =>
        Effect.gen(function* () {
          for (let i = 0; i < 1_000 && !(yield* until); i++) yield* TestClock.adjust("10 millis")
          return yield* until
        })
      // A dies: its scope closes and its release never reaches the store.
      const scopeA = yield* Scope.make()
      const a = yield* ProjectionRunner.run([projection], { ...options, workerId: "a" }).pipe(
        Effect.provideService(Lease.LeaseStoreTag, { ...leases, release: () => Effect.void }),
        Scope.extend(scopeA)
      )
      assert.isTrue(yield* step(isLeader(a)), "A leads")
      const b = yield* ProjectionRunner.run([projection], { ...options, workerId: "b" })
      yield* TestClock.adjust("2150 millis")
      assert.isFalse(yield* isLeader(b), "B stands by while A renews")
      const diedAt = yield* Clock.currentTimeMillis
      yield* Scope.close(scopeA, Exit.void)
      assert.isTrue(yield* step(isLeader(b)), "B takes over")
      const failover = (yield* Clock.currentTimeMillis) - diedAt
      assert.isAtMost(failover, 1000 + 300 + 10, `failover after ${failover} ms of logical time`)
      assert.isAtLeast(failover, 1000 - 300, "not before A's last renewal expired")
      const lease = Option.getOrThrow(yield* leases.status("sub-failover"))
      assert.strictEqual(lease.workerId, "b")
      assert.strictEqual(lease.fenceToken, 2n)
    }).pipe(Effect.provide(InMemory.layer)))
})
