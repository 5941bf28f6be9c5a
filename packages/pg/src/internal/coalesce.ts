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
  readonly deferred: Deferred.Deferred<A, E>
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
      Effect.suspend(() => {
        open = false
        const left = waiting.splice(0)
        signal()
        return Effect.forEach(left, (entry) => Deferred.interrupt(entry.deferred), { discard: true })
      })
    )
    // Each caller's deferred gets its exit, or the effect `alone(input)`, which a deferred's waiter
    // runs itself (`Deferred.completeWith`'s semantics): so the caller's own fiber runs it.
    const settle = (entries: ReadonlyArray<Entry<I, A, E>>, exit: Exit.Exit<ReadonlyArray<Outcome<A, E>>>) =>
      Effect.sync(() => {
        const failed = Exit.isFailure(exit) ? Exit.failCause(exit.cause) : undefined
        for (let i = 0; i < entries.length; i++) {
          const entry = entries[i]!
          const outcome = failed ?? (Exit.isSuccess(exit) ? exit.value[i] : undefined) ?? noResult
          Deferred.unsafeDone(entry.deferred, outcome === alone ? options.alone(entry.input) : outcome)
        }
      })
    const batch = (entries: ReadonlyArray<Entry<I, A, E>>) =>
      options.run(entries.map((entry) => entry.input)).pipe(
        Effect.exit,
        Effect.flatMap((exit) => settle(entries, exit)),
        Effect.onInterrupt(() => Effect.forEach(entries, (entry) => Deferred.interrupt(entry.deferred), { discard: true }))
      )
    // A worker takes every waiting call (at most `max`), or waits for one to arrive.
    const next: Effect.Effect<void> = Effect.suspend(() => {
      if (waiting.length === 0) return open ? Deferred.await(arrived) : Effect.never
      const entries = waiting.splice(0, options.max).filter((entry) => !entry.cancelled)
      return entries.length === 0 ? Effect.void : batch(entries)
    })
    for (let i = 0; i < options.workers; i++) yield* Effect.forkScoped(Effect.forever(next))
    return {
      submit: (input) =>
        Effect.uninterruptibleMask((restore) =>
          Effect.withFiberRuntime<A, E>((fiber) => {
            if (!open) return Effect.interrupt
            const deferred = Deferred.unsafeMake<A, E>(fiber.id())
            const entry: Entry<I, A, E> = { input, deferred, cancelled: false }
            waiting.push(entry)
            // A worker waits for `arrived` only when it found none waiting.
            if (waiting.length === 1) signal()
            return restore(Deferred.await(deferred)).pipe(Effect.onInterrupt(() => Effect.sync(() => (entry.cancelled = true))))
          })
        )
    }
  })
