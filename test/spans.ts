/**
 * Records the spans an effect opens, as the default tracer makes them (name,
 * parent, kind, attributes, and the exit each ended with). Shared by the
 * span tests of the packages.
 */
import * as Effect from "effect/Effect"
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
