/**
 * Saga claims and outcomes, run against every store: a step longer than its
 * claim keeps it and runs once; a transient write failure rewrites the same
 * outcome instead of running the step again; what a step produces must be
 * JSON (else the step failed, once); a refused compensation does not stop
 * the older ones. In memory on `TestClock`, on Postgres on real time.
 *
 * @since 0.1.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as Aggregate from "../Aggregate.js"
import * as EventStore from "../EventStore.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import * as Saga from "../Saga.js"
import * as SagaRunner from "../SagaRunner.js"
import * as SagaStore from "../SagaStore.js"
import type * as LeaseStore from "../LeaseStore.js"
import type * as SubscriptionStore from "../SubscriptionStore.js"
import { unique } from "./fixtures.js"
import { flakyAppends } from "./sagaSuite.js"

type Env = EventStore.EventStore | SubscriptionStore.SubscriptionStore | LeaseStore.LeaseStore | SagaStore.SagaStore

const Started = Schema.TaggedStruct("Started", { n: Schema.Number })
const Done = Schema.TaggedStruct("Done", { step: Schema.String })
const Undone = Schema.TaggedStruct("Undone", { step: Schema.String })
const State = Schema.Struct({ note: Schema.String })
type State = typeof State.Type

/** What a step does when it runs (or is compensated); `runs` counts its runs. */
interface StepSpec {
  readonly name: string
  readonly run?: (state: State) => Effect.Effect<Saga.StepResult<State>, string>
  readonly compensate?: (state: State) => Effect.Effect<Saga.StepResult<State>, string>
}

/** A saga of the given steps in fresh categories; each step by default emits `Done` to its own stream. */
const world = (specs: ReadonlyArray<StepSpec>) => {
  const tag = unique("")
  const none = { initial: {}, apply: (s: {}) => s }
  const Start = Aggregate.make({ category: `claimstart${tag}`, events: Started, ...none })
  const Work = Aggregate.make({ category: `claimwork${tag}`, events: Schema.Union(Done, Undone), ...none })
  const runs = new Map<string, number>()
  const count = (name: string) => Effect.sync(() => void runs.set(name, (runs.get(name) ?? 0) + 1))
  const done = (name: string) => Effect.map(Saga.emit(Work, name, Done.make({ step: name })), (e) => ({ emit: [e] }))
  const steps = specs.map((spec) =>
    Saga.step<State, typeof Started.Type>(spec.name, {
      run: (state) => {
        const body: Effect.Effect<Saga.StepResult<State>, unknown> = spec.run === undefined ? done(spec.name) : spec.run(state)
        return Effect.zipRight(count(spec.name), body)
      },
      compensate: (state): Effect.Effect<Saga.StepResult<State>, unknown> =>
        spec.compensate === undefined
          ? Effect.map(Saga.emit(Work, spec.name, Undone.make({ step: spec.name })), (e) => ({ emit: [e] }))
          : spec.compensate(state)
    })
  )
  const saga = Saga.make({
    name: `claims${tag}`,
    state: State,
    startOn: { aggregate: Start, start: (_, recorded) => Option.some({ instanceId: recorded.streamId, state: { note: "" } }) },
    steps
  })
  const start = (id: string) =>
    Effect.as(
      EventStore.append(`${Start.category}-${id}`, Start.category, ExpectedVersion.Any, [
        { eventType: `${Start.category}.started`, schemaVersion: 1, data: { n: 1 } }
      ]),
      `${Start.category}-${id}`
    )
  const emitted = (eventType: "done" | "undone") =>
    EventStore.readCategory(Work.category).pipe(
      Stream.filter((e) => e.eventType === `${Work.category}.${eventType}`),
      Stream.runCount
    )
  return { saga, runs, start, emitted }
}

/**
 * Time for this store: `TestClock` steps in memory, real time on Postgres.
 *
 * @since 0.1.0
 * @category suites
 */
export interface SagaClaimTime {
  readonly live: boolean
}

/**
 * Registers the saga claim suite (claims, rewritten outcomes, JSON outputs, compensations); `time`
 * says whether the store runs on real time.
 *
 * @since 0.1.0
 * @category suites
 */
export const sagaClaimSuite = (name: string, storeLayer: Layer.Layer<Env>, time: SagaClaimTime) =>
  describe(`saga claims: ${name}`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: time.live })((it) => {
      /** Lets time pass: a `TestClock` step, or a short real sleep. */
      const tick = time.live ? Effect.sleep("20 millis") : TestClock.adjust("25 millis")
      /** Polls `check` as time passes, until it holds or (real) `millis` elapse. */
      const until = <E, R>(check: Effect.Effect<boolean, E, R>, what: string, millis = 30_000) =>
        Effect.gen(function* () {
          const deadline = Date.now() + millis
          while (!(yield* check)) {
            if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
            yield* tick
          }
        })

      const startRunner = (
        w: ReturnType<typeof world>,
        options: { readonly claimTimeout?: Duration.DurationInput; readonly events?: EventStore.EventStore } = {}
      ) =>
        Effect.gen(function* () {
          const scope = yield* Scope.make()
          const events = options.events ?? (yield* EventStore.EventStore)
          yield* SagaRunner.run([w.saga], {
            workerId: "w1",
            // Four drivers: a claim that lapsed while its step ran would be taken by another at once.
            concurrency: 4,
            pollInterval: "100 millis",
            projections: { pollInterval: "100 millis", leaseTtl: "10 minutes", leaseRecheckInterval: "1 minute" },
            transitionRetry: Schedule.spaced("100 millis"),
            ...(options.claimTimeout === undefined ? {} : { claimTimeout: options.claimTimeout })
          }).pipe(Effect.provideService(EventStore.EventStore, events), Scope.extend(scope))
          return Scope.close(scope, Exit.void)
        })

      const statusOf = (w: ReturnType<typeof world>, id: string) =>
        Effect.map(SagaRunner.status(w.saga), (all) => all.find((s) => s.instanceId === id))
      const historyOf = (w: ReturnType<typeof world>, id: string) =>
        Effect.flatMap(SagaStore.SagaStore, (store) =>
          Effect.map(store.history(w.saga.name, id), (h) => h.map((e) => `${e.step}:${e.outcome}`))
        )
      const ended = (w: ReturnType<typeof world>, id: string, status: SagaStore.Status) =>
        until(Effect.map(statusOf(w, id), (s) => s?.status === status), `instance ${status}`)

      it.effect("a step three times longer than claimTimeout keeps its claim: it runs exactly once and the saga completes", () =>
        Effect.gen(function* () {
          const claim = Duration.millis(time.live ? 1_500 : 1_000)
          const w = world([
            { name: "slow", run: () => Effect.as(Effect.sleep(Duration.times(claim, 3)), {}) },
            { name: "after" }
          ])
          const stop = yield* startRunner(w, { claimTimeout: claim })
          const id = yield* w.start("long")
          yield* ended(w, id, "completed")
          assert.strictEqual(w.runs.get("slow"), 1)
          assert.deepStrictEqual(yield* historyOf(w, id), ["slow:completed", "after:completed"])
          assert.strictEqual((yield* statusOf(w, id))?.attempts, 0)
          yield* stop
        }))

      it.effect("a StoreError writing a step's outcome rewrites that outcome: the step runs once, the failures show in status", () =>
        Effect.gen(function* () {
          const w = world([{ name: "first" }, { name: "second" }])
          const gate = yield* Deferred.make<void>()
          // The first step's emit is cancelled twice, then waits for the test to look at the status.
          const events = yield* flakyAppends(
            (requests) => requests.some((r) => r.streamId.endsWith("-first")),
            2,
            gate
          )
          const stop = yield* startRunner(w, { events })
          const id = yield* w.start("flaky")
          yield* until(Effect.map(statusOf(w, id), (s) => s?.attempts === 2), "two failed writes in status")
          const retrying = yield* statusOf(w, id)
          assert.strictEqual(retrying?.status, "running")
          assert.strictEqual(retrying?.currentStep, "first")
          assert.match(retrying?.lastError ?? "", /canceling statement/)
          assert.strictEqual(w.runs.get("first"), 1)
          yield* Deferred.succeed(gate, undefined)
          yield* ended(w, id, "completed")
          assert.strictEqual(w.runs.get("first"), 1, "the step ran once; only its write was redone")
          assert.deepStrictEqual(yield* historyOf(w, id), ["first:completed", "second:completed"])
          assert.strictEqual(yield* w.emitted("done"), 2)
          const done = yield* statusOf(w, id)
          assert.strictEqual(done?.attempts, 0)
          assert.strictEqual(done?.lastError, null)
          yield* stop
        }))

      const notJson: ReadonlyArray<readonly [string, StepSpec["run"], string]> = [
        ["a bigint in an outbox payload", () => Effect.succeed({ outbox: [{ topic: "t", payload: { n: 1n } }] }), "outbox[0].payload.n: bigint is not JSON"],
        [
          "a NUL in an outbox payload",
          () => Effect.succeed({ outbox: [{ topic: "t", payload: { s: "a\u0000b" } }] }),
          "outbox[0].payload.s: contains NUL"
        ],
        ["a NUL in the state", () => Effect.succeed({ state: { note: "a\u0000b" } }), "state.note: contains NUL"]
      ]
      for (const [what, run, reason] of notJson) {
        it.effect(`a step producing ${what} failed (once, never retried): the completed steps are compensated`, () =>
          Effect.gen(function* () {
            const w = world([{ name: "first" }, { name: "bad", ...(run === undefined ? {} : { run }) }, { name: "never" }])
            const stop = yield* startRunner(w)
            const id = yield* w.start("bad")
            yield* ended(w, id, "failed")
            assert.strictEqual(w.runs.get("bad"), 1)
            assert.strictEqual(w.runs.get("never"), undefined)
            const history = yield* historyOf(w, id)
            assert.strictEqual(history.length, 3)
            assert.strictEqual(history[0], "first:completed")
            assert.isTrue(history[1]!.startsWith(`bad:failed: ${reason}`), history[1])
            assert.strictEqual(history[2], "first:compensated")
            assert.strictEqual(yield* w.emitted("undone"), 1)
            const outbox = (yield* Effect.flatMap(SagaStore.SagaStore, (store) => store.outbox)).filter((m) =>
              m.idempotencyKey.startsWith(Saga.correlationId(w.saga.name, id))
            )
            assert.strictEqual(outbox.length, 0)
            const status = yield* statusOf(w, id)
            assert.strictEqual(status?.attempts, 0)
            assert.include(status?.error ?? "", reason)
            yield* stop
          }))
      }

      it.effect("a refused compensation is recorded and the older steps are still compensated; the instance ends failed", () =>
        Effect.gen(function* () {
          const w = world([
            { name: "first" },
            // Its compensation produces a payload that is not JSON: refused, for good.
            { name: "second", compensate: () => Effect.succeed({ outbox: [{ topic: "t", payload: { n: 2n } }] }) },
            { name: "third", run: () => Effect.fail("declined") }
          ])
          const stop = yield* startRunner(w)
          const id = yield* w.start("refused")
          yield* ended(w, id, "failed")
          const history = yield* historyOf(w, id)
          assert.match(history[2] ?? "", /^third:failed: .*declined/)
          assert.deepStrictEqual(history, [
            "first:completed",
            "second:completed",
            history[2],
            "second:compensation-refused: outbox[0].payload.n: bigint is not JSON",
            "first:compensated"
          ])
          assert.strictEqual(yield* w.emitted("undone"), 1)
          const status = yield* statusOf(w, id)
          // The instance keeps the failure that started the compensation.
          assert.match(status?.error ?? "", /^step third failed: .*declined/)
          assert.strictEqual(status?.attempts, 0)
          yield* stop
        }))
    })
  })
