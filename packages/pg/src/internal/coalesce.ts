/**
 * Natural batching of concurrent calls: every call waiting when a worker
 * becomes free goes out with the others in one batch, and a call that finds
 * a worker free goes out at once (no timer, no added latency when idle).
 *
 * @internal
 */
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Queue from "effect/Queue"
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
    const queue = yield* Queue.unbounded<Entry<I, A, E>>()
    // Runs after the workers are interrupted (finalizers run in reverse): nobody waits forever.
    yield* Effect.addFinalizer(() =>
      Queue.takeAll(queue).pipe(
        Effect.flatMap((left) => Effect.forEach(left, (entry) => Deferred.interrupt(entry.deferred), { discard: true })),
        Effect.zipRight(Queue.shutdown(queue))
      )
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
    const batch = (taken: Chunk.Chunk<Entry<I, A, E>>) => {
      const entries = Chunk.toReadonlyArray(taken).filter((entry) => !entry.cancelled)
      if (entries.length === 0) return Effect.void
      return options.run(entries.map((entry) => entry.input)).pipe(
        Effect.exit,
        Effect.flatMap((exit) => settle(entries, exit)),
        Effect.onInterrupt(() => Effect.forEach(entries, (entry) => Deferred.interrupt(entry.deferred), { discard: true }))
      )
    }
    const worker = Effect.forever(Effect.flatMap(Queue.takeBetween(queue, 1, options.max), batch))
    for (let i = 0; i < options.workers; i++) yield* Effect.forkScoped(worker)
    return {
      submit: (input) =>
        Effect.uninterruptibleMask((restore) =>
          Effect.flatMap(Deferred.make<A, E>(), (deferred) => {
            const entry: Entry<I, A, E> = { input, deferred, cancelled: false }
            return Effect.zipRight(
              Queue.offer(queue, entry),
              restore(Deferred.await(deferred)).pipe(Effect.onInterrupt(() => Effect.sync(() => (entry.cancelled = true))))
            )
          })
        )
    }
  })
