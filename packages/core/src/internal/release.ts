/**
 * Letting go of a page a consumer is done with.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Tracer from "effect/Tracer"

/**
 * Empties a batch's events array once its consumer is done with it (the
 * subscription made the array for that batch; nothing else holds it).
 *
 * V8's young-generation collector treats every pointer from an
 * old-generation object as a root, whether or not that object is still
 * alive. A batch passed through a `Stream` stage that runs an effect per
 * element stays reachable that way from dead objects of the stream's
 * machinery, so its events, with their data, survive scavenges until a
 * mark-compact: measured on a 100k catch-up through `Stream.runForEach`
 * over `Subscription.checkpointed`, 3.5 MB promoted per scavenge and
 * 250–270k events/s; with each batch's array emptied after its effect,
 * 0.07 MB and 300–375k (a plain `poll` loop: 0.11 MB, 310–390k). A heap
 * snapshot (which collects everything dead first) finds only the batch in
 * hand: the chain exists only for the young-generation collector.
 *
 * @internal
 */
export const releaseEvents = (events: ReadonlyArray<unknown>): void => {
  if (Array.isArray(events)) events.length = 0
}

/**
 * `effect` in a span of its own, made like `Effect.withSpan` makes one (its
 * statements are its children), but ended with the number of items `effect`
 * returned instead of the items: a span keeps the exit it ends with, and a
 * span made before a read's statement is old by the time the rows arrive, so
 * the page it kept would survive young-generation collections (measured on
 * `Subscription.poll`: about 500 B per event promoted to the old generation,
 * half of a catch-up's Node CPU in garbage collection). `annotate` sets the
 * span's attributes from the result.
 *
 * @internal
 */
export const countedSpan = <A, E, R>(
  name: string,
  options: { readonly attributes: Record<string, unknown> },
  effect: Effect.Effect<ReadonlyArray<A>, E, R>,
  annotate: (span: Tracer.Span, items: ReadonlyArray<A>) => void = () => {}
): Effect.Effect<ReadonlyArray<A>, E, R> =>
  // The span is made and its end installed uninterruptibly, so it always ends.
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(Effect.makeSpan(name, { attributes: options.attributes, captureStackTrace: false }), (span) =>
      Effect.onExit(
        restore(Effect.tap(Effect.withParentSpan(effect, span), (items) => Effect.sync(() => annotate(span, items)))),
        (exit) =>
          Effect.flatMap(Clock.currentTimeNanos, (now) => Effect.sync(() => span.end(now, Exit.map(exit, (items) => items.length))))
      )
    )
  )
