/**
 * The runner's retry schedule, asserted as a schedule (its delays, computed
 * without waiting), and the runner's use of it on logical time (`TestClock`):
 * no assertion here depends on how busy the machine is. The runner's
 * decisions (what to do after a leadership, how a handler failed, why a
 * projection stopped) as pure functions, without a store.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as Aggregate from "../src/Aggregate.js"
import * as EventStore from "../src/EventStore.js"
import { MissingVersion, OrderingViolation, StoreError } from "../src/EventStoreError.js"
import * as ExpectedVersion from "../src/ExpectedVersion.js"
import * as InMemory from "../src/InMemory.js"
import * as Lease from "../src/Lease.js"
import * as LeaseStore from "../src/LeaseStore.js"
import * as Projection from "../src/Projection.js"
import * as ProjectionRunner from "../src/ProjectionRunner.js"
import { aggregateIdOf, type RecordedEvent } from "../src/RecordedEvent.js"
import * as StreamId from "../src/StreamId.js"

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
      const leases = yield* LeaseStore.LeaseStore
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
        Effect.provideService(LeaseStore.LeaseStore, { ...leases, release: () => Effect.void }),
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

const recorded = (streamId: string, streamVersion: number, data: Record<string, unknown> = {}): RecordedEvent => ({
  eventId: "00000000-0000-4000-8000-000000000001",
  streamId: StreamId.fromStored(streamId),
  category: StreamId.categoryFromStored("pure"),
  aggregateId: aggregateIdOf(streamId, "pure"),
  streamVersion,
  globalPosition: 7n,
  transactionId: 3n,
  eventType: "pure.happened",
  schemaVersion: 1,
  data,
  metadata: {},
  recordedAt: new Date(0)
})

describe("ProjectionRunner decisions (pure, no store)", () => {
  const lost = new Lease.LeaseLost({ subscriptionId: "s", workerId: "w", fenceToken: 1n })
  const storeError = new StoreError({ kind: "Connection", operation: "poll", cause: new Error("reset") })
  const missing = new MissingVersion({ subscriptionId: "s", streamId: "pure-a", missing: 2, seen: 3 })
  const regression = new OrderingViolation({ subscriptionId: "s", streamId: "pure-b", version: 4, lastDelivered: 5 })

  it("afterLeadership: not acquired or lost or a failing store stand by; the work ending leads again", () => {
    const standBy = ProjectionRunner.afterLeadership<never>("s", Either.right(Option.none()))
    assert.strictEqual(standBy._tag, "StandBy")
    if (standBy._tag === "StandBy") assert.strictEqual(standBy.why, "lease held elsewhere")
    assert.strictEqual(ProjectionRunner.afterLeadership<never>("s", Either.right(Option.some(10)))._tag, "Lead")
    const afterLost = ProjectionRunner.afterLeadership<never>("s", Either.left(lost))
    assert.deepStrictEqual(afterLost._tag === "StandBy" ? [afterLost.why, Option.getOrNull(afterLost.error)] : [], ["lease lost", lost])
    const afterStore = ProjectionRunner.afterLeadership<never>("s", Either.left(storeError))
    assert.deepStrictEqual(afterStore._tag === "StandBy" ? [afterStore.why, Option.getOrNull(afterStore.error)] : [], [
      "store failed",
      storeError
    ])
  })

  it("afterLeadership: the log refusing to go on stops the projection, naming the stream, with no placeholder", () => {
    for (const [error, streamId, streamVersion] of [
      [missing, "pure-a", 2],
      [regression, "pure-b", 4]
    ] as const) {
      const next = ProjectionRunner.afterLeadership<never>("s", Either.left(error))
      assert.strictEqual(next._tag, "Stop")
      if (next._tag !== "Stop") continue
      const failure = next.failure
      assert.strictEqual(failure.subscriptionId, "s")
      assert.strictEqual(failure.reason._tag, "SubscriptionFailed")
      assert.strictEqual(failure.cause, error)
      assert.strictEqual(failure.streamId, streamId)
      assert.strictEqual(failure.streamVersion, streamVersion)
      assert.isUndefined(failure.event, "not an event's failure: no event, no attempts")
      assert.isUndefined(failure.attempts)
      assert.include(failure.message, error.message)
    }
    const handlerStop = new ProjectionRunner.ProjectionFailed<"boom">({
      subscriptionId: "s",
      reason: ProjectionRunner.stoppedAt(recorded("pure-c", 1), 3, { _tag: "HandlerFailed", error: "boom" })
    })
    const next = ProjectionRunner.afterLeadership<"boom">("s", Either.left(handlerStop))
    assert.isTrue(next._tag === "Stop" && next.failure === handlerStop, "a ProjectionFailed stops as it is")
  })

  it("classify: the handler's error stays typed, a defect is a defect, an interruption is not a failure", () => {
    const failed = ProjectionRunner.classify<"boom">(Cause.fail("boom" as const))
    assert.deepStrictEqual(Option.getOrNull(failed), { _tag: "HandlerFailed", error: "boom" })
    const thrown = new Error("thrown")
    assert.deepStrictEqual(Option.getOrNull(ProjectionRunner.classify<never>(Cause.die(thrown))), { _tag: "HandlerDied", defect: thrown })
    assert.isTrue(Option.isNone(ProjectionRunner.classify<never>(Cause.interrupt(FiberId.none))))
    // A handler running effects concurrently: one fails, its siblings are interrupted. Still the handler's failure.
    const concurrent = ProjectionRunner.classify<"boom">(Cause.parallel(Cause.fail("boom" as const), Cause.interrupt(FiberId.none)))
    assert.deepStrictEqual(Option.getOrNull(concurrent), { _tag: "HandlerFailed", error: "boom" })
  })

  it("stoppedAt: the event, the attempts and the handler's own error, typed", () => {
    const reason = ProjectionRunner.stoppedAt(recorded("pure-d", 4), 5, { _tag: "HandlerFailed", error: { code: 42 } as const })
    const failure = new ProjectionRunner.ProjectionFailed<{ readonly code: 42 }>({ subscriptionId: "s", reason })
    assert.strictEqual(failure.reason._tag, "HandlerFailed")
    if (failure.reason._tag === "HandlerFailed") {
      // Typed: `code` is known to be 42 without a cast.
      const code: 42 = failure.reason.error.code
      assert.strictEqual(code, 42)
    }
    assert.deepStrictEqual(failure.event, { streamId: "pure-d", streamVersion: 4, globalPosition: 7n, eventType: "pure.happened" })
    assert.strictEqual(failure.attempts, 5)
    assert.strictEqual(failure.eventType, "pure.happened")
    assert.include(failure.message, "pure-d v4")
  })

  it.effect("retryWithAttempts: counts attempts, succeeds on a later one, gives up with the last error", () =>
    Effect.gen(function* () {
      const seen: Array<number> = []
      const third = yield* ProjectionRunner.retryWithAttempts(
        (n) => Effect.zipRight(Effect.sync(() => void seen.push(n)), n < 3 ? Effect.fail(`e${n}`) : Effect.succeed(n)),
        Schedule.recurs(5),
        () => true
      )
      assert.strictEqual(third, 3)
      assert.deepStrictEqual(seen, [1, 2, 3])
      const exhausted = yield* Effect.flip(
        ProjectionRunner.retryWithAttempts((n) => Effect.fail(`e${n}`), ProjectionRunner.retrySchedule({ retry: Schedule.forever, maxAttempts: 4 }), () => true)
      )
      assert.deepStrictEqual(exhausted, { error: "e4", attempts: 4 })
      const notRetried = yield* Effect.flip(
        ProjectionRunner.retryWithAttempts((n) => Effect.fail(`e${n}`), Schedule.forever, (e) => e !== "e2")
      )
      assert.deepStrictEqual(notRetried, { error: "e2", attempts: 2 })
    }))
})

describe("ProjectionRunner start and failures", () => {
  it.scoped("two projections with one subscription id fail at start with InvalidInput, before any lease is taken", () =>
    Effect.gen(function* () {
      const leases = yield* LeaseStore.LeaseStore
      const one = Projection.atLeastOnce({ subscriptionId: "sub-dup", categories: ["dup"], handle: () => Effect.void })
      const error = yield* Effect.flip(ProjectionRunner.run([one, one], { workerId: "w" }))
      assert.strictEqual(error._tag, "InvalidInput")
      assert.strictEqual(error.field, "subscriptionId")
      assert.isTrue(Option.isNone(yield* leases.status("sub-dup")), "nothing started")
      const bad = yield* Effect.flip(ProjectionRunner.run([one], { workerId: "w", batchSize: 0 }))
      assert.strictEqual(bad.field, "batchSize")
    }).pipe(Effect.provide(InMemory.layer)))

  it.scoped("whenCaughtUp: InvalidInput for a projection not run here, NotCaughtUp with the lag on timeout", () =>
    Effect.gen(function* () {
      const projection = Projection.atLeastOnce({
        subscriptionId: "sub-slow",
        categories: ["slow"],
        handle: () => Effect.never
      })
      const runner = yield* ProjectionRunner.run([projection], { workerId: "w", pollInterval: "10 millis" })
      const elsewhere = yield* Effect.flip(runner.whenCaughtUp("sub-other"))
      assert.strictEqual(elsewhere._tag, "InvalidInput")
      yield* EventStore.append("slow-1", "slow", ExpectedVersion.NoStream, [
        { eventType: "slow.a", schemaVersion: 1, data: {} },
        { eventType: "slow.b", schemaVersion: 1, data: {} }
      ])
      const waiting = yield* Effect.fork(Effect.flip(runner.whenCaughtUp("sub-slow", "1 second")))
      yield* TestClock.adjust("1 second")
      const late = yield* Fiber.join(waiting)
      assert.strictEqual(late._tag, "NotCaughtUp")
      if (late._tag === "NotCaughtUp") assert.strictEqual(late.lag, 2)
    }).pipe(Effect.provide(InMemory.layer)))

  for (const delivery of ["at-least-once", "transactional"] as const) {
    it.scoped(`${delivery}: a handler that throws stops the projection with HandlerDied; an undecodable event with Undecodable`, () =>
      Effect.gen(function* () {
        const thrown = new Error("thrown")
        const make = delivery === "transactional" ? Projection.transactional : Projection.atLeastOnce
        const throwing = make({
          subscriptionId: `sub-throw-${delivery}`,
          categories: [`thr${delivery === "transactional" ? "tx" : "al"}`],
          handle: (): Effect.Effect<void> => {
            throw thrown
          }
        })
        const Item = Schema.TaggedStruct("Item", { n: Schema.Number })
        const Items = Aggregate.make({ category: `und${delivery === "transactional" ? "tx" : "al"}`, events: Item, initial: 0, apply: (s: number) => s + 1 })
        const undecodable = make({ subscriptionId: `sub-undecodable-${delivery}`, aggregate: Items, handle: () => Effect.void })
        const runner = yield* ProjectionRunner.run<never, unknown>([throwing, undecodable], {
          workerId: "w",
          pollInterval: "10 seconds",
          retry: Schedule.spaced("10 millis"),
          maxAttempts: 2
        })
        yield* EventStore.append(`${throwing.categories![0]}-1`, throwing.categories![0]!, ExpectedVersion.NoStream, [
          { eventType: "x.y", schemaVersion: 1, data: {} }
        ])
        yield* EventStore.append(`${Items.category}-1`, Items.category, ExpectedVersion.NoStream, [
          { eventType: Items.codec.types.get("Item")!.type, schemaVersion: 1, data: { n: "not a number" } }
        ])
        const stopped = Effect.map(runner.status, (all) => all.every((s) => s.state === "failed"))
        for (let i = 0; i < 500 && !(yield* stopped); i++) yield* TestClock.adjust("10 millis")
        const [first, second] = yield* runner.status
        const died = Option.getOrThrow(first!.failure)
        assert.strictEqual(died.reason._tag, "HandlerDied")
        // The defect as thrown (Effect's tracing may re-wrap it: compared by message).
        assert.instanceOf(died.cause, Error)
        assert.strictEqual(died.cause instanceof Error ? died.cause.message : "", thrown.message)
        assert.strictEqual(died.attempts, 2)
        const decode = Option.getOrThrow(second!.failure)
        assert.strictEqual(decode.reason._tag, "Undecodable")
        assert.strictEqual(decode.streamId, `${Items.category}-1`)
        assert.strictEqual(decode.attempts, 2)
      }).pipe(Effect.provide(InMemory.layer)))
  }
})
