/**
 * How a spec of the test kit fails: a typed error naming what was expected
 * and what happened, so `it.effect` reports it like a failed assertion.
 *
 * @since 0.1.0
 */
import * as Equal from "effect/Equal"
import * as Schema from "effect/Schema"
import * as Utils from "effect/Utils"

/**
 * A spec's expectation did not hold.
 *
 * @example
 * ```ts
 * import { Aggregate } from "@mire/core"
 * import { AggregateSpec } from "@mire/core/testing"
 * import { Console, Effect, Schema } from "effect"
 *
 * const Opened = Schema.TaggedStruct("Opened", { owner: Schema.String })
 * const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Number })
 * const Account = Aggregate.make({
 *   category: "account",
 *   events: Schema.Union(Opened, Deposited),
 *   initial: { owner: "", balance: 0 },
 *   apply: (state, event) =>
 *     event._tag === "Opened" ? { ...state, owner: event.owner } : { ...state, balance: state.balance + event.amount }
 * })
 *
 * const open = () => Opened.make({ owner: "Grace" })
 *
 * const spec = AggregateSpec.given(Account)
 *   .when(open)
 *   .thenEvents(Opened.make({ owner: "Ada" }))
 *   .pipe(Effect.catchTag("SpecFailure", (e) => Console.log(`expected ${e.expected}, got ${e.actual}`)))
 * ```
 * @since 0.1.0
 * @category errors
 */
export class SpecFailure extends Schema.TaggedError<SpecFailure>()("SpecFailure", {
  /** What was checked, e.g. `thenEvents: the new events`. */
  assertion: Schema.String,
  expected: Schema.String,
  actual: Schema.String
}) {
  override get message(): string {
    return `${this.assertion}\n  expected: ${this.expected}\n  actual:   ${this.actual}`
  }
}

export {
  /**
   * A projection did not catch up with the log in time (the runner's error,
   * re-exported here for specs).
   *
   * @since 0.1.0
   * @category errors
   */
  NotCaughtUp
} from "../ProjectionRunner.js"

/**
 * Structural equality, deep through plain objects, arrays and Effect data
 * types (errors made with `Data.TaggedError` or `Schema.TaggedError`
 * included).
 *
 * @example
 * ```ts
 * import { SpecFailure } from "@mire/core/testing"
 *
 * assert.strictEqual(SpecFailure.equals({ a: [1, 2] }, { a: [1, 2] }), true)
 * ```
 * @since 0.1.0
 */
export const equals = (self: unknown, that: unknown): boolean => Utils.structuralRegion(() => Equal.equals(self, that))

/**
 * A one-line rendering of a value for failure messages (bigints as `1n`,
 * errors with their `_tag`).
 *
 * @example
 * ```ts
 * import { SpecFailure } from "@mire/core/testing"
 *
 * assert.strictEqual(SpecFailure.show({ position: 1n }), '{"position":"1n"}')
 * ```
 * @since 0.1.0
 */
export const show = (value: unknown): string => {
  if (value === undefined) return "undefined"
  try {
    return (
      JSON.stringify(value, (_key, v: unknown) => {
        if (typeof v === "bigint") return `${v}n`
        if (v instanceof Error) {
          const tag = (v as { readonly _tag?: unknown })._tag
          return { ...(tag === undefined ? {} : { _tag: tag }), ...v, message: v.message }
        }
        return v
      }) ?? String(value)
    )
  } catch {
    return String(value)
  }
}
