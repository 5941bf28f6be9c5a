/**
 * Natural batching of concurrent calls: every call waiting when a worker
 * becomes free goes out with the others in one batch, and a call that finds
 * a worker free goes out at once (no timer, no added latency when idle).
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import type * as Scope from "effect/Scope"

/**
 * A batch's answer for one input: run it alone, in the caller's own fiber (with the
 * coalescer's `alone`), not in the worker.
 *
 * @internal
 */
export const alone: unique symbol = Symbol.for("@mire/pg/internal/coalesce/alone")

/**
 * What a batch gives one input: its exit, or {@link alone}.
 *
 * @internal
 */
export type Outcome<A, E> = Exit.Exit<A, E> | typeof alone

interface Entry<I, A, E> {
  readonly input: I
  /** Resumes the caller with the effect it runs next, in its own fiber (its exit, or its append alone). */
  readonly resume: (effect: Effect.Effect<A, E>) => void
  /** Set when the caller stopped waiting before its batch went out: the batch leaves it out. */
  cancelled: boolean
}

/** @internal */
export interface Coalescer<I, A, E> {
  /** Runs `input` in the next batch (or alone, when its batch says so); its own result. */
  readonly submit: (input: I) => Effect.Effect<A, E>
}

const noResult = Exit.die(new Error("coalesce: no result"))

/**
 * `workers` fibers in the current scope, each taking every waiting input (at
 * most `max`) and running them with `run`, which gives one outcome per input,
 * in order: its `Exit`, or {@link alone}, for which the caller runs
 * `alone(input)` itself, in its own fiber, while the worker takes the next
 * batch at once (so a slow `alone` never holds the worker). A caller
 * interrupted before its batch went out is left out of it; once its batch is
 * out, the batch runs to its end (the caller's outcome is then unknown to it,
 * as for an interrupted statement). Closing the scope interrupts every
 * waiting caller.
 *
 * @internal
 */
export const make = <I, A, E>(options: {
  readonly workers: number
  readonly max: number
  readonly run: (inputs: ReadonlyArray<I>) => Effect.Effect<ReadonlyArray<Outcome<A, E>>>
  readonly alone: (input: I) => Effect.Effect<A, E>
}): Effect.Effect<Coalescer<I, A, E>, never, Scope.Scope> =>
  Effect.gen(function* () {
    // The calls no worker has taken, in arrival order. A plain array and a `Deferred` replaced
    // when it is completed, not a `Queue`: a submit is on the path of every append, and this
    // costs it a third of the Effect operations.
    const waiting: Array<Entry<I, A, E>> = []
    let open = true
    // Completed (and replaced) when a call arrives to find none waiting, or when the scope closes.
    let arrived = Deferred.unsafeMake<void>(FiberId.none)
    const signal = () => {
      const done = arrived
      arrived = Deferred.unsafeMake<void>(FiberId.none)
      Deferred.unsafeDone(done, Exit.void)
    }
    // Runs after the workers are interrupted (finalizers run in reverse): nobody waits forever.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        open = false
        const left = waiting.splice(0)
        signal()
        for (const entry of left) entry.resume(Effect.interrupt)
      })
    )
    // Each caller resumes with its exit, or with the effect `alone(input)`, which it then runs in
    // its own fiber.
    const settle = (entries: ReadonlyArray<Entry<I, A, E>>, exit: Exit.Exit<ReadonlyArray<Outcome<A, E>>>) =>
      Effect.sync(() => {
        const failed = Exit.isFailure(exit) ? Exit.failCause(exit.cause) : undefined
        for (let i = 0; i < entries.length; i++) {
          const entry = entries[i]!
          const outcome = failed ?? (Exit.isSuccess(exit) ? exit.value[i] : undefined) ?? noResult
          entry.resume(outcome === alone ? options.alone(entry.input) : outcome)
        }
      })
    const batch = (entries: ReadonlyArray<Entry<I, A, E>>) =>
      options.run(entries.map((entry) => entry.input)).pipe(
        Effect.exit,
        Effect.flatMap((exit) => settle(entries, exit)),
        Effect.onInterrupt(() =>
          Effect.sync(() => {
            for (const entry of entries) entry.resume(Effect.interrupt)
          })
        )
      )
    // A worker takes every waiting call (at most `max`), or waits for one to arrive.
    const next: Effect.Effect<void> = Effect.suspend(() => {
      if (waiting.length === 0) return open ? Deferred.await(arrived) : Effect.never
      const entries = waiting.splice(0, options.max).filter((entry) => !entry.cancelled)
      return entries.length === 0 ? Effect.void : batch(entries)
    })
    for (let i = 0; i < options.workers; i++) yield* Effect.forkScoped(Effect.forever(next))
    // A caller waits in `Effect.async`, its entry holding the resume callback. A `Deferred` per
    // call cost more (each is made by spreading Effect's prototype into a new object, then
    // awaited under an interruptible mask): with it, 16 writers of 1-event appends spent 63–76 µs
    // of Node CPU per append, without it 51–61 (PG 15, alternating runs). The entry is queued
    // and its canceller installed in one step, so an interrupt cannot fall between them.
    return {
      submit: (input) =>
        Effect.async<A, E>((resume) => {
          if (!open) return resume(Effect.interrupt)
          const entry: Entry<I, A, E> = { input, resume, cancelled: false }
          waiting.push(entry)
          // A worker waits for `arrived` only when it found none waiting.
          if (waiting.length === 1) signal()
          return Effect.sync(() => {
            entry.cancelled = true
          })
        })
    }
  })
