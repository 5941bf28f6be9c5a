/**
 * Records the spans an effect opens, as the default tracer makes them (name,
 * parent, kind, attributes, and the exit each ended with). Shared by the
 * span tests of the packages.
 */
import { assert } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"

/** Runs `effect` with every span it opens recorded; returns its value and those spans. */
export const traced = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Tracer.tracerWith((base) => {
    const spans: Array<Tracer.Span> = []
    const recording = Tracer.make({
      span: (name, parent, context, links, startTime, kind, options) => {
        const span = base.span(name, parent, context, links, startTime, kind, options)
        spans.push(span)
        return span
      },
      context: (f, fiber) => base.context(f, fiber)
    })
    return Effect.map(Effect.withTracer(effect, recording), (value) => ({ value, spans }))
  })

/**
 * Asserts a span a count-ended operation opened (`countedSpan`): a child of
 * the span named `parent`, ended successfully with `count`, never the items.
 */
export const assertEndedWithCount = (span: Tracer.Span, parent: string, count: number): void => {
  assert.strictEqual(
    Option.match(span.parent, { onNone: () => undefined, onSome: (p) => (p._tag === "Span" ? p.name : undefined) }),
    parent
  )
  assert.strictEqual(span.status._tag, "Ended")
  if (span.status._tag === "Ended") {
    const exit = span.status.exit
    assert.isTrue(Exit.isSuccess(exit))
    if (Exit.isSuccess(exit)) assert.strictEqual(exit.value, count)
  }
}
