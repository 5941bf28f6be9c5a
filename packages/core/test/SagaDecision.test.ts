/**
 * The saga state machine without a store: what a claimed instance does, where
 * each outcome takes it, and the row that records it.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Decision from "../src/internal/sagaDecision.js"
import type * as SagaStore from "../src/SagaStore.js"

const t0 = new Date("2026-01-01T00:00:00.000Z")
const at = (millis: number) => new Date(t0.getTime() + millis)

const steps: ReadonlyArray<Decision.StepInfo> = [
  { name: "reserve", awaits: undefined },
  { name: "charge", awaits: { types: ["payment.charged", "payment.declined"], timeout: Duration.seconds(30) } },
  { name: "ship", awaits: undefined }
]
const context = (now: Date): Decision.Context => ({ steps, now })

const row = (fields: Partial<SagaStore.InstanceRow> = {}): SagaStore.InstanceRow => ({
  sagaName: "fulfilment",
  instanceId: "order-1",
  correlationId: "saga:fulfilment:order-1",
  status: "running",
  stepIndex: 0,
  state: { n: 0 },
  input: null,
  awaiting: null,
  deadline: null,
  dueAt: t0,
  error: null,
  attempts: 0,
  lastError: null,
  version: 1,
  updatedAt: t0,
  ...fields
})

/** Decides and records: the next row and the history entries, as the runner persists them. */
const step = (current: SagaStore.InstanceRow, event: Decision.Event, now: Date) => {
  const transition = Decision.decide(current, event, context(now))
  return {
    transition,
    row: Decision.next(current, transition, now),
    history: Decision.history(transition).map((e) => `${e.step}:${e.outcome}`)
  }
}

describe("SagaDecision.work", () => {
  it("by status: a waiting instance was claimed at its deadline, a compensating one compensates, a running one runs", () => {
    assert.deepStrictEqual(Decision.work(row({ status: "waiting", stepIndex: 1 }), 3), Decision.Work.TimeOut({ index: 1 }))
    assert.deepStrictEqual(Decision.work(row({ status: "compensating", stepIndex: 0 }), 3), Decision.Work.Compensate({ index: 0 }))
    assert.deepStrictEqual(Decision.work(row({ stepIndex: 2 }), 3), Decision.Work.Run({ index: 2 }))
    assert.deepStrictEqual(Decision.work(row({ stepIndex: 3 }), 3), Decision.Work.Finish())
  })
})

describe("SagaDecision.decide", () => {
  it("a step without a wait completes and the next one runs with no input; the last completes the saga", () => {
    const first = step(row({ attempts: 2, lastError: "boom" }), Decision.Event.StepSucceeded({ state: { n: 1 } }), at(5))
    assert.strictEqual(first.transition._tag, "Proceed")
    assert.deepStrictEqual(first.history, ["reserve:completed"])
    assert.strictEqual(first.row.status, "running")
    assert.strictEqual(first.row.stepIndex, 1)
    assert.deepStrictEqual(first.row.state, { n: 1 })
    assert.deepStrictEqual(first.row.input, { _tag: "None" })
    // A committed transition resets the retry bookkeeping and moves the version on.
    assert.strictEqual(first.row.attempts, 0)
    assert.strictEqual(first.row.lastError, null)
    assert.strictEqual(first.row.version, 2)
    assert.deepStrictEqual(first.row.updatedAt, at(5))

    const last = step(row({ stepIndex: 2 }), Decision.Event.StepSucceeded({ state: { n: 3 } }), at(9))
    assert.strictEqual(last.transition._tag, "Complete")
    assert.strictEqual(last.row.status, "completed")
    assert.strictEqual(last.row.stepIndex, 3)
    assert.deepStrictEqual(last.history, ["ship:completed"])
  })

  it("a step that awaits waits until now plus its timeout, for the types it awaits", () => {
    const next = step(row({ stepIndex: 1 }), Decision.Event.StepSucceeded({ state: { n: 2 } }), at(1_000))
    assert.strictEqual(next.transition._tag, "Await")
    assert.deepStrictEqual(next.history, ["charge:awaiting"])
    assert.strictEqual(next.row.status, "waiting")
    assert.deepStrictEqual(next.row.awaiting, ["payment.charged", "payment.declined"])
    assert.deepStrictEqual(next.row.deadline, at(31_000))
    assert.strictEqual(next.row.input, null)
    assert.deepStrictEqual(next.row.state, { n: 2 })
  })

  it("a response completes the waiting step and is the next step's input; the state is unchanged", () => {
    const waiting = row({ status: "waiting", stepIndex: 1, awaiting: ["payment.charged"], deadline: at(30_000), state: { n: 2 } })
    const next = step(waiting, Decision.Event.Responded({ eventType: "payment.charged", data: { id: "c1" } }), at(10))
    assert.deepStrictEqual(next.history, ["charge:completed"])
    assert.strictEqual(next.row.status, "running")
    assert.strictEqual(next.row.stepIndex, 2)
    assert.deepStrictEqual(next.row.input, { _tag: "Response", eventType: "payment.charged", data: { id: "c1" } })
    assert.strictEqual(next.row.awaiting, null)
    assert.strictEqual(next.row.deadline, null)
    assert.deepStrictEqual(next.row.state, { n: 2 })
  })

  it("a failed step compensates the steps below it, newest first; the first step failing fails the saga", () => {
    const failed = step(row({ stepIndex: 2 }), Decision.Event.StepFailed({ reason: "no carrier" }), at(1))
    assert.deepStrictEqual(failed.history, ["ship:failed: no carrier"])
    assert.strictEqual(failed.row.status, "compensating")
    assert.strictEqual(failed.row.stepIndex, 1)
    assert.strictEqual(failed.row.error, "step ship failed: no carrier")

    const first = step(row({ stepIndex: 0 }), Decision.Event.StepFailed({ reason: "out of stock" }), at(1))
    assert.strictEqual(first.transition._tag, "Fail")
    assert.strictEqual(first.row.status, "failed")
    assert.strictEqual(first.row.stepIndex, -1)
    assert.strictEqual(first.row.error, "step reserve failed: out of stock")
  })

  it("an error response and a passed deadline compensate like a failure, each with its own history entry", () => {
    const waiting = row({ status: "waiting", stepIndex: 1, awaiting: ["payment.declined"], deadline: at(30_000) })
    const declined = step(waiting, Decision.Event.ErrorResponse({ eventType: "payment.declined" }), at(2))
    assert.deepStrictEqual(declined.history, ["charge:error-response: payment.declined"])
    assert.strictEqual(declined.row.status, "compensating")
    assert.strictEqual(declined.row.stepIndex, 0)
    assert.strictEqual(declined.row.error, "step charge got an error response payment.declined")
    assert.strictEqual(declined.row.deadline, null)

    const timedOut = step(waiting, Decision.Event.DeadlinePassed(), at(30_000))
    assert.deepStrictEqual(timedOut.history, ["charge:timed-out"])
    assert.strictEqual(timedOut.row.status, "compensating")
    assert.strictEqual(timedOut.row.error, "step charge timed out")
  })

  it("compensations run down to the first step, then the saga fails keeping the error that started them", () => {
    const compensating = row({ status: "compensating", stepIndex: 1, error: "step ship failed: x" })
    const charge = step(compensating, Decision.Event.Compensated({ state: { n: 9 }, ran: true }), at(1))
    assert.deepStrictEqual(charge.history, ["charge:compensated"])
    assert.strictEqual(charge.row.status, "compensating")
    assert.strictEqual(charge.row.stepIndex, 0)
    assert.deepStrictEqual(charge.row.state, { n: 9 })
    // A step without a compensation has nothing to record.
    const reserve = step(charge.row, Decision.Event.Compensated({ state: { n: 9 }, ran: false }), at(2))
    assert.deepStrictEqual(reserve.history, [])
    assert.strictEqual(reserve.row.status, "failed")
    assert.strictEqual(reserve.row.stepIndex, -1)
    assert.strictEqual(reserve.row.error, "step ship failed: x")
  })

  it("a refused compensation is recorded, the state kept, and the next one down still runs", () => {
    const compensating = row({ status: "compensating", stepIndex: 1, state: { n: 4 }, error: "e" })
    const next = step(compensating, Decision.Event.CompensationRefused({ reason: "payload.n: bigint is not JSON" }), at(1))
    assert.deepStrictEqual(next.history, ["charge:compensation-refused: payload.n: bigint is not JSON"])
    assert.strictEqual(next.row.status, "compensating")
    assert.strictEqual(next.row.stepIndex, 0)
    assert.deepStrictEqual(next.row.state, { n: 4 })
  })

  it("a failed attempt is retried after its delay: counted, no history entry, nothing else moves", () => {
    const running = row({ stepIndex: 1, attempts: 1, lastError: "first" })
    const retry = step(running, Decision.Event.AttemptFailed({ reason: "transition failed: cancelled", delay: Duration.millis(400) }), at(100))
    assert.deepStrictEqual(retry.transition, Decision.Transition.Retry({ error: "transition failed: cancelled", dueAt: at(500) }))
    assert.deepStrictEqual(retry.history, [])
    assert.deepStrictEqual(retry.row, {
      ...running,
      attempts: 2,
      lastError: "transition failed: cancelled",
      dueAt: at(500),
      version: 2,
      updatedAt: at(100)
    })
    // A waiting instance is due by its deadline: the retried timeout moves it too.
    const waiting = row({ status: "waiting", stepIndex: 1, deadline: at(0) })
    const later = step(waiting, Decision.Event.AttemptFailed({ reason: "r", delay: Duration.seconds(1) }), at(0))
    assert.deepStrictEqual(later.row.deadline, at(1_000))
    assert.strictEqual(later.row.status, "waiting")
  })

  it("an undecodable state or input ends the instance failed at its step", () => {
    const state = step(row({ stepIndex: 1 }), Decision.Event.StateUndecodable({ reason: "expected number" }), at(1))
    assert.deepStrictEqual(state.history, ["state:undecodable"])
    assert.strictEqual(state.row.status, "failed")
    assert.strictEqual(state.row.stepIndex, 1)
    assert.strictEqual(state.row.error, "state does not decode: expected number")

    const input = step(row({ stepIndex: 0 }), Decision.Event.InputUndecodable({ reason: "unknown event type" }), at(1))
    assert.deepStrictEqual(input.history, ["reserve:input-undecodable"])
    assert.strictEqual(input.row.error, "the input of step reserve does not decode: unknown event type")
  })

  it("an instance past the saga's last step completes with nothing recorded", () => {
    const next = step(row({ stepIndex: 5 }), Decision.Event.NoStepLeft(), at(1))
    assert.strictEqual(next.row.status, "completed")
    assert.strictEqual(next.row.stepIndex, 5)
    assert.deepStrictEqual(next.history, [])
  })

  it("a whole run, decided step by step: reserve, charge (declined), compensate reserve, failed", () => {
    let current = row()
    const log: Array<string> = []
    const apply = (event: Decision.Event, now: Date) => {
      const next = step(current, event, now)
      log.push(...next.history)
      current = next.row
    }
    assert.strictEqual(Decision.work(current, steps.length)._tag, "Run")
    apply(Decision.Event.StepSucceeded({ state: { n: 1 } }), at(1))
    apply(Decision.Event.StepSucceeded({ state: { n: 2 } }), at(2))
    assert.strictEqual(current.status, "waiting")
    apply(Decision.Event.ErrorResponse({ eventType: "payment.declined" }), at(3))
    assert.deepStrictEqual(Decision.work(current, steps.length), Decision.Work.Compensate({ index: 0 }))
    apply(Decision.Event.Compensated({ state: { n: 0 }, ran: true }), at(4))
    assert.deepStrictEqual(log, ["reserve:completed", "charge:awaiting", "charge:error-response: payment.declined", "reserve:compensated"])
    assert.strictEqual(current.status, "failed")
    assert.strictEqual(current.version, 5)
    assert.strictEqual(current.error, "step charge got an error response payment.declined")
  })
})
