/**
 * The wake-up queue of a polling worker: notifications from a store's
 * wake-up stream, coalesced, so a worker with nothing to do waits for the
 * next one or its poll interval, whichever comes first.
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"

/** Waits for a wake-up. */
export interface Wakeup {
  /** Returns at the next wake-up, or after `timeout`; wake-ups already queued are consumed with it. */
  readonly wait: (timeout: Duration.DurationInput) => Effect.Effect<void>
}

/**
 * Follows `source` for as long as the enclosing scope lives (reconnecting
 * after `retry` when it fails), keeping up to `capacity` wake-ups: each one
 * ends one worker's wait, and a burst beyond it coalesces.
 */
export const make = <A, E, R>(
  source: Stream.Stream<A, E, R>,
  options: { readonly capacity: number; readonly retry: Duration.DurationInput; readonly onWakeup?: (a: A) => Effect.Effect<void> }
): Effect.Effect<Wakeup, never, R | Scope.Scope> =>
  Effect.gen(function* () {
    const queue = yield* Queue.sliding<void>(options.capacity)
    const onWakeup = options.onWakeup
    yield* source.pipe(
      Stream.runForEach((a) =>
        onWakeup === undefined ? Queue.offer(queue, undefined) : Effect.zipRight(onWakeup(a), Queue.offer(queue, undefined))
      ),
      Effect.retry(Schedule.spaced(options.retry)),
      Effect.forkScoped
    )
    return {
      wait: (timeout) =>
        Queue.take(queue).pipe(Effect.timeout(timeout), Effect.ignore, Effect.zipRight(Queue.takeAll(queue)), Effect.asVoid)
    }
  })
