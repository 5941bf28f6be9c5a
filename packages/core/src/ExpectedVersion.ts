/**
 * What an append expects of its stream: the optimistic-concurrency check.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Predicate from "effect/Predicate"
import { InvalidInput } from "./EventStoreError.js"

/**
 * - `Any`: no check.
 * - `NoStream`: the stream must not exist yet.
 * - `StreamExists`: the stream must exist (any version).
 * - `Exact(version)`: the stream must be at exactly `version`
 *   (`Exact(0)` means "no events yet", like `NoStream`).
 *
 * @example
 * ```ts
 * import { EventStore, ExpectedVersion } from "@mire/core"
 *
 * // Fails with ConcurrencyConflict unless the stream is at version 3.
 * const append = EventStore.append("account-1", "account", ExpectedVersion.Exact(3), [
 *   { eventType: "account.deposited", schemaVersion: 1, data: { amount: 10 } }
 * ])
 * ```
 * @since 0.1.0
 * @category models
 */
export type ExpectedVersion = Data.TaggedEnum<{
  Any: {}
  NoStream: {}
  StreamExists: {}
  Exact: { readonly version: number }
}>

const ctor = Data.taggedEnum<ExpectedVersion>()

/**
 * @since 0.1.0
 * @category constructors
 */
export const Any: ExpectedVersion = ctor.Any()
/**
 * @since 0.1.0
 * @category constructors
 */
export const NoStream: ExpectedVersion = ctor.NoStream()
/**
 * @since 0.1.0
 * @category constructors
 */
export const StreamExists: ExpectedVersion = ctor.StreamExists()
/**
 * @example
 * ```ts
 * import { ExpectedVersion } from "@mire/core"
 *
 * assert.strictEqual(ExpectedVersion.format(ExpectedVersion.Exact(3)), "exact(3)")
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const Exact = (version: number): ExpectedVersion => ctor.Exact({ version })

/**
 * Renders an expectation for messages and errors, e.g. `exact(3)`.
 *
 * @since 0.1.0
 */
export const format = (expected: ExpectedVersion): string =>
  ctor.$match(expected, {
    Any: () => "any",
    NoStream: () => "no-stream",
    StreamExists: () => "stream-exists",
    Exact: ({ version }) => `exact(${version})`
  })

/**
 * Refuses an `Exact` version that is not a non-negative safe integer, and
 * anything that is not one of the four expectations.
 *
 * @since 0.1.0
 */
export const validate = (expected: ExpectedVersion): Effect.Effect<ExpectedVersion, InvalidInput> => {
  const fault = invalid(expected)
  return fault === undefined ? Effect.succeed(expected) : Effect.fail(fault)
}

/**
 * The reason an expectation is refused, or `undefined` when it is valid. A
 * JavaScript caller can pass anything, so the value is checked as unknown:
 * `undefined`, or an object of another `_tag`, is refused too (rather than
 * failing later as a defect).
 *
 * @since 0.1.0
 */
export const invalid = (expected: ExpectedVersion): InvalidInput | undefined => {
  const value: unknown = expected
  const record = Predicate.isRecord(value) ? value : {}
  switch (record._tag) {
    case "Any":
    case "NoStream":
    case "StreamExists":
      return undefined
    case "Exact":
      return typeof record.version === "number" && Number.isSafeInteger(record.version) && record.version >= 0
        ? undefined
        : new InvalidInput({ field: "expectedVersion", reason: `${String(record.version)} is not a non-negative integer` })
    default:
      return new InvalidInput({ field: "expectedVersion", reason: "is not an ExpectedVersion" })
  }
}

/**
 * Does a stream at `current` (0 = no stream) satisfy the expectation? Both
 * stores decide with this one function.
 *
 * @since 0.1.0
 */
export const matches = (expected: ExpectedVersion, current: number): boolean =>
  ctor.$match(expected, {
    Any: () => true,
    NoStream: () => current === 0,
    StreamExists: () => current > 0,
    Exact: ({ version }) => version === current
  })
