/**
 * The saga state machine as pure functions: what a claimed instance has to
 * do ({@link work}), and, once something happened to it, where it goes
 * ({@link decide}) and the row that records it ({@link next}). No I/O and no
 * clock: the runner runs the step, then hands the outcome and the time in.
 */
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import type { JsonObject } from "../RecordedEvent.js"
import type * as SagaStore from "../SagaStore.js"

/** A step as the decision sees it: its name and what it awaits. */
export interface StepInfo {
  readonly name: string
  readonly awaits: { readonly types: ReadonlyArray<string>; readonly timeout: Duration.Duration } | undefined
}

/** What a claimed instance has to do now. */
export type Work = Data.TaggedEnum<{
  /** Its deadline passed while it waited: the response never came. */
  TimeOut: { readonly index: number }
  /** Run the compensation of the step at `index`. */
  Compensate: { readonly index: number }
  /** Run the step at `index` with the stored input. */
  Run: { readonly index: number }
  /** No step is left (the saga's definition has fewer steps than the instance ran). */
  Finish: {}
}>

/** Constructors of {@link Work}. */
export const Work = Data.taggedEnum<Work>()

/** What happened to an instance. */
export type Event = Data.TaggedEnum<{
  /** Its stored state no longer decodes with the saga's Schema. */
  StateUndecodable: { readonly reason: string }
  /** The stored input of its step no longer decodes. */
  InputUndecodable: { readonly reason: string }
  /** It waited past its deadline. */
  DeadlinePassed: {}
  /** Its step ran and what it produced was written; `state` is the next state, encoded. */
  StepSucceeded: { readonly state: unknown }
  /** Its step failed, died, or produced something that cannot be stored. */
  StepFailed: { readonly reason: string }
  /** The response its step awaited arrived. */
  Responded: { readonly eventType: string; readonly data: JsonObject }
  /** An error response to its step arrived. */
  ErrorResponse: { readonly eventType: string }
  /** The compensation of its step ran (or there is none) and was written; `state` is the next state, encoded. */
  Compensated: { readonly state: unknown; readonly ran: boolean }
  /** The compensation of its step produced something that cannot be stored. */
  CompensationRefused: { readonly reason: string }
  /** An attempt of the transition failed (its outcome could not be written, its compensation failed). */
  AttemptFailed: { readonly reason: string; readonly delay: Duration.Duration }
  /** No step is left. */
  NoStepLeft: {}
}>

/** Constructors of {@link Event}. */
export const Event = Data.taggedEnum<Event>()

/** A history entry: the step's name and its outcome. */
export interface Entry {
  readonly step: string
  readonly outcome: string
}

/** Where an instance goes: each transition but `Retry` commits with its history entries. */
export type Transition = Data.TaggedEnum<{
  /** Run the step at `stepIndex` next, with `input`. */
  Proceed: {
    readonly history: ReadonlyArray<Entry>
    readonly stepIndex: number
    readonly state: unknown
    readonly input: SagaStore.StoredInput
  }
  /** Wait for one of `awaiting` until `deadline`. */
  Await: {
    readonly history: ReadonlyArray<Entry>
    readonly state: unknown
    readonly awaiting: ReadonlyArray<string>
    readonly deadline: Date
  }
  /** Every step completed. */
  Complete: {
    readonly history: ReadonlyArray<Entry>
    readonly stepIndex: number
    readonly state: unknown
    readonly input: SagaStore.StoredInput | null
  }
  /** Compensate the step at `stepIndex` next. */
  Compensate: {
    readonly history: ReadonlyArray<Entry>
    readonly stepIndex: number
    readonly state: unknown
    readonly error: string | null
  }
  /** Ended failed. */
  Fail: {
    readonly history: ReadonlyArray<Entry>
    readonly stepIndex: number
    readonly state: unknown
    readonly error: string | null
  }
  /** Try the same transition again at `dueAt`, the failure counted (no history entry). */
  Retry: { readonly error: string; readonly dueAt: Date }
}>

/** Constructors of {@link Transition}. */
export const Transition = Data.taggedEnum<Transition>()

/** The saga as the decision sees it. */
export interface Context {
  readonly steps: ReadonlyArray<StepInfo>
  readonly now: Date
}

/** A failure as text, for history, status and logs. */
export const describe = (cause: unknown): string => {
  if (cause instanceof Error) return cause.message
  if (typeof cause === "string") return cause
  try {
    return JSON.stringify(cause, (_, v) => (typeof v === "bigint" ? v.toString() : v)) ?? String(cause)
  } catch {
    return String(cause)
  }
}

/** The name of step `index`, or `#<index>` when the saga no longer has it. */
export const stepName = (steps: ReadonlyArray<{ readonly name: string }>, index: number): string =>
  steps[index]?.name ?? `#${index}`

/** What a claimed instance has to do, by its status. */
export const work = (row: SagaStore.InstanceRow, stepCount: number): Work => {
  if (row.status === "waiting") return Work.TimeOut({ index: row.stepIndex })
  if (row.status === "compensating") return Work.Compensate({ index: row.stepIndex })
  return row.stepIndex < stepCount ? Work.Run({ index: row.stepIndex }) : Work.Finish()
}

const addMillis = (at: Date, duration: Duration.Duration): Date => new Date(at.getTime() + Duration.toMillis(duration))

/** The step at `failed` failed: compensate the completed steps below it, newest first, or end failed. */
const compensateBelow = (row: SagaStore.InstanceRow, failed: number, error: string, history: ReadonlyArray<Entry>) =>
  failed - 1 >= 0
    ? Transition.Compensate({ history, stepIndex: failed - 1, state: row.state, error })
    : Transition.Fail({ history, stepIndex: failed - 1, state: row.state, error })

/** The compensation of the step at `index` is done: the next one down, or failed. */
const compensatedDown = (row: SagaStore.InstanceRow, index: number, state: unknown, history: ReadonlyArray<Entry>) =>
  index - 1 >= 0
    ? Transition.Compensate({ history, stepIndex: index - 1, state, error: row.error })
    : Transition.Fail({ history, stepIndex: index - 1, state, error: row.error })

/** The step at `index` completed: the next step runs with `input`, or the saga is complete. */
const completed = (
  index: number,
  steps: number,
  state: unknown,
  input: SagaStore.StoredInput,
  history: ReadonlyArray<Entry>
) =>
  index + 1 >= steps
    ? Transition.Complete({ history, stepIndex: steps, state, input })
    : Transition.Proceed({ history, stepIndex: index + 1, state, input })

/** Where an instance goes after `event`. */
export const decide = (row: SagaStore.InstanceRow, event: Event, context: Context): Transition => {
  const index = row.stepIndex
  const name = stepName(context.steps, index)
  const entry = (outcome: string): ReadonlyArray<Entry> => [{ step: name, outcome }]
  switch (event._tag) {
    case "StateUndecodable":
      return Transition.Fail({
        history: [{ step: "state", outcome: "undecodable" }],
        stepIndex: index,
        state: row.state,
        error: `state does not decode: ${event.reason}`
      })
    case "InputUndecodable":
      return Transition.Fail({
        history: entry("input-undecodable"),
        stepIndex: index,
        state: row.state,
        error: `the input of step ${name} does not decode: ${event.reason}`
      })
    case "DeadlinePassed":
      return compensateBelow(row, index, `step ${name} timed out`, entry("timed-out"))
    case "StepSucceeded": {
      const awaits = context.steps[index]?.awaits
      return awaits === undefined
        ? completed(index, context.steps.length, event.state, { _tag: "None" }, entry("completed"))
        : Transition.Await({
            history: entry("awaiting"),
            state: event.state,
            awaiting: awaits.types,
            deadline: addMillis(context.now, awaits.timeout)
          })
    }
    case "StepFailed":
      return compensateBelow(row, index, `step ${name} failed: ${event.reason}`, entry(`failed: ${event.reason}`))
    case "Responded":
      return completed(
        index,
        context.steps.length,
        row.state,
        { _tag: "Response", eventType: event.eventType, data: event.data },
        entry("completed")
      )
    case "ErrorResponse":
      return compensateBelow(
        row,
        index,
        `step ${name} got an error response ${event.eventType}`,
        entry(`error-response: ${event.eventType}`)
      )
    case "Compensated":
      return compensatedDown(row, index, event.state, event.ran ? entry("compensated") : [])
    case "CompensationRefused":
      // Retrying cannot help: the refusal is recorded and the older steps are still compensated.
      return compensatedDown(row, index, row.state, entry(`compensation-refused: ${event.reason}`))
    case "AttemptFailed":
      return Transition.Retry({ error: event.reason, dueAt: addMillis(context.now, event.delay) })
    case "NoStepLeft":
      return Transition.Complete({ history: [], stepIndex: index, state: row.state, input: row.input })
  }
}

/** The history entries a transition commits with. */
export const history = (transition: Transition): ReadonlyArray<Entry> =>
  transition._tag === "Retry" ? [] : transition.history

/** The row that records `transition` of `row` at `now`. */
export const next = (row: SagaStore.InstanceRow, transition: Transition, now: Date): SagaStore.InstanceRow => {
  // A committed transition moves the instance on and resets its retry bookkeeping.
  const advance = (fields: Partial<SagaStore.InstanceRow>): SagaStore.InstanceRow => ({
    ...row,
    ...fields,
    attempts: 0,
    lastError: null,
    version: row.version + 1,
    updatedAt: now
  })
  const settled = { input: null, awaiting: null, deadline: null, dueAt: now }
  switch (transition._tag) {
    case "Proceed":
    case "Complete":
      return advance({
        ...settled,
        status: transition._tag === "Proceed" ? "running" : "completed",
        stepIndex: transition.stepIndex,
        state: transition.state,
        input: transition.input
      })
    case "Await":
      return advance({
        status: "waiting",
        state: transition.state,
        input: null,
        awaiting: transition.awaiting,
        deadline: transition.deadline,
        dueAt: now
      })
    case "Compensate":
      return advance({
        ...settled,
        status: "compensating",
        stepIndex: transition.stepIndex,
        state: transition.state,
        error: transition.error
      })
    case "Fail":
      return advance({
        ...settled,
        status: "failed",
        stepIndex: transition.stepIndex,
        state: transition.state,
        error: transition.error
      })
    case "Retry":
      return {
        ...row,
        attempts: row.attempts + 1,
        lastError: transition.error,
        dueAt: transition.dueAt,
        // A waiting instance is due by its deadline: its timeout is retried after the delay too.
        deadline: row.status === "waiting" ? transition.dueAt : row.deadline,
        version: row.version + 1,
        updatedAt: now
      }
  }
}
