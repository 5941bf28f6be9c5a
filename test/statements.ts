/**
 * Counts the SQL statements an effect sends: the `sql.execute` spans of
 * `@effect/sql` (BEGIN and COMMIT are not spans). Shared by the read tests
 * and the bench.
 */
import * as Effect from "effect/Effect"
import * as Tracer from "effect/Tracer"

/** How many SQL statements one run of `op` sends, and its result. */
export const counted = <A, E, R>(op: Effect.Effect<A, E, R>): Effect.Effect<readonly [number, A], E, R> =>
  Tracer.tracerWith((base) => {
    let statements = 0
    const counting = Tracer.make({
      span: (name, parent, context, links, startTime, kind, options) => {
        if (name === "sql.execute") statements++
        return base.span(name, parent, context, links, startTime, kind, options)
      },
      context: (f, fiber) => base.context(f, fiber)
    })
    return Effect.map(Effect.withTracer(op, counting), (a) => [statements, a] as const)
  })
