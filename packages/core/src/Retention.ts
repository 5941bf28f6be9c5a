/**
 * Retention: how far a stream may be truncated. Truncating a stream before
 * version `n` removes its events `1..n-1` for good; the stream's newest
 * snapshot becomes its base, so `EventStore.loadSnapshotted` still loads it
 * (a plain `load`, which folds from version 1, fails with `StreamTruncated`).
 *
 * The decisions are pure functions over a stream's {@link Extent} (what a
 * store reads of it under its lock): {@link truncation} for an explicit
 * `EventStore.truncate(streamId, before)`, {@link decide} for a per-category
 * {@link Policy} (`EventStore.applyRetention`). A truncation never goes past
 * the newest snapshot the aggregate can still load from (one of the snapshot
 * version it reads: a snapshot of another version counts as none): the
 * event at the snapshot's version stays, so the snapshot keeps an anchor
 * that proves the stream has that version. Nor does it go past the stream's
 * lowest dead-lettered version, whose event a projection still has to
 * handle. A truncation removes at most {@link chunkSize} versions per
 * transaction ({@link nextStep}).
 *
 * @since 0.2.0
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import { DeadLetterPending, InvalidInput, SnapshotRequired, StreamDeleted } from "./EventStoreError.js"

/**
 * What truncation decides on, as a store reads it (under the stream's lock
 * when it truncates).
 *
 * @since 0.2.0
 * @category models
 */
export interface Extent {
  /** The stream's version (its last event's). */
  readonly version: number
  /** The first version still stored (1 when the stream was never truncated). */
  readonly truncatedBefore: number
  /** The stream version of its stored snapshot; `null` when it has none. */
  readonly snapshotVersion: number | null
  /**
   * The snapshot version (the aggregate's snapshot `version`, its state's
   * schema version) its stored snapshot was written with; `null` when it has none.
   */
  readonly snapshotSchemaVersion: number | null
  /**
   * The lowest stream version of the stream's dead letters (any
   * subscription, any status); `null` when it has none.
   */
  readonly deadLetterFrom: number | null
  /** Was the stream deleted (a tombstone)? */
  readonly deleted: boolean
  /**
   * The first version recorded at or after the cutoff the store was asked
   * about (a policy's `maxAge`); `null` when no stored event is that young,
   * or no cutoff was asked.
   */
  readonly youngFrom: number | null
}

/**
 * The snapshot version a truncation may cut to: the number (the aggregate's
 * snapshot `version`, e.g. `mire stream truncate --snapshot-version 2`), or
 * the aggregate itself (its `snapshot` definition's `version`).
 *
 * @since 0.2.0
 * @category models
 */
export type SnapshotVersionOf = number | { readonly category?: string; readonly snapshot: Option.Option<{ readonly version: number }> }

/**
 * The snapshot version of a {@link SnapshotVersionOf}: an integer, or the
 * aggregate's snapshot `version` (an aggregate without a snapshot
 * definition is `InvalidInput`: it cannot load a truncated stream).
 *
 * @example
 * ```ts
 * import { Retention } from "@mire/core"
 * import { Either, Option } from "effect"
 *
 * assert.deepStrictEqual(Retention.expectedSnapshotVersion(2), Either.right(2))
 * assert.deepStrictEqual(Retention.expectedSnapshotVersion({ snapshot: Option.some({ version: 3 }) }), Either.right(3))
 * assert.ok(Either.isLeft(Retention.expectedSnapshotVersion(1.5)))
 * ```
 * @since 0.2.0
 * @category validation
 */
export const expectedSnapshotVersion = (of: SnapshotVersionOf): Either.Either<number, InvalidInput> => {
  if (typeof of === "number") {
    return Number.isSafeInteger(of)
      ? Either.right(of)
      : Either.left(new InvalidInput({ field: "snapshotVersion", reason: `${of} is not an integer` }))
  }
  return Option.match(of.snapshot, {
    onNone: () =>
      Either.left(
        new InvalidInput({ field: "snapshotVersion", reason: `${of.category ?? "the aggregate"} has no snapshot definition` })
      ),
    onSome: (definition) => expectedSnapshotVersion(definition.version)
  })
}

/**
 * The stream version of a stream's stored snapshot when it is of the
 * snapshot version `expected` (the one the aggregate loads from); `null`
 * when it has none, or one of another version (which a load ignores).
 *
 * @since 0.2.0
 * @category decisions
 */
export const usableSnapshot = (extent: Extent, expected: number): number | null =>
  extent.snapshotVersion !== null && extent.snapshotSchemaVersion === expected ? extent.snapshotVersion : null

/**
 * How many versions (so at most how many events) one transaction of a
 * truncation removes.
 *
 * @since 0.2.0
 * @category models
 */
export const chunkSize = 1000

/**
 * The next step of a truncation to `before` from a stream's current base:
 * each short transaction removes the versions below the step (at most
 * `size` of them) and raises the base to it, so no transaction is long.
 *
 * @example
 * ```ts
 * import { Retention } from "@mire/core"
 *
 * assert.strictEqual(Retention.nextStep(1, 2500, 1000), 1001)
 * assert.strictEqual(Retention.nextStep(2001, 2500, 1000), 2500)
 * ```
 * @since 0.2.0
 * @category decisions
 */
export const nextStep = (truncatedBefore: number, before: number, size: number = chunkSize): number =>
  Math.min(before, truncatedBefore + size)

/**
 * A per-category retention policy: remove the events recorded longer than
 * `maxAge` ago, and those beyond the newest `maxCount`; an event goes when
 * either says so. At least one must be given.
 *
 * @since 0.2.0
 * @category models
 */
export interface Policy {
  readonly maxAge?: Duration.DurationInput | undefined
  readonly maxCount?: number | undefined
}

/**
 * A policy checked by {@link validate}: `maxAge` as a `Duration`.
 *
 * @since 0.2.0
 * @category models
 */
export interface CheckedPolicy {
  readonly maxAge: Option.Option<Duration.Duration>
  readonly maxCount: Option.Option<number>
}

/**
 * What retention does to one stream.
 *
 * - `Keep`: nothing to remove (the policy keeps every stored event, or the
 *   stream was deleted).
 * - `Truncate`: remove the versions below `before`. `wanted` is where the
 *   policy alone would have cut; `before < wanted` when the newest usable
 *   snapshot (`limitedBy: "snapshot"`) or the lowest dead letter
 *   (`"deadLetter"`) stopped it.
 * - `NoSnapshot`: the policy would remove versions below `wanted`, but the
 *   stream has no usable snapshot (of the expected snapshot version) past
 *   its current base: nothing is removed.
 * - `DeadLettered`: it has one, but a dead letter at `deadLetterFrom`, at
 *   or below its current base, keeps every event: nothing is removed.
 *
 * @since 0.2.0
 * @category models
 */
export type Decision =
  | { readonly _tag: "Keep" }
  | {
      readonly _tag: "Truncate"
      readonly before: number
      readonly wanted: number
      readonly limitedBy: "snapshot" | "deadLetter" | null
    }
  | { readonly _tag: "NoSnapshot"; readonly wanted: number }
  | { readonly _tag: "DeadLettered"; readonly wanted: number; readonly deadLetterFrom: number }

/**
 * Checks a policy: `maxCount` a positive integer, `maxAge` a finite,
 * non-negative duration (a negative or `NaN` one is refused, not read as
 * zero), at least one of them given.
 *
 * @example
 * ```ts
 * import { Retention } from "@mire/core"
 * import { Either } from "effect"
 *
 * assert.ok(Either.isRight(Retention.validate({ maxAge: "30 days", maxCount: 1000 })))
 * assert.ok(Either.isLeft(Retention.validate({ maxCount: 0 })))
 * assert.ok(Either.isLeft(Retention.validate({})))
 * ```
 * @since 0.2.0
 * @category validation
 */
export const validate = (policy: Policy): Either.Either<CheckedPolicy, InvalidInput> => {
  const { maxAge, maxCount } = policy
  if (maxAge === undefined && maxCount === undefined) {
    return Either.left(new InvalidInput({ field: "policy", reason: "a retention policy needs maxAge or maxCount" }))
  }
  if (maxCount !== undefined && !(Number.isSafeInteger(maxCount) && maxCount > 0)) {
    return Either.left(new InvalidInput({ field: "maxCount", reason: `${maxCount} is not a positive integer` }))
  }
  const age = maxAge === undefined ? Option.none() : Duration.decodeUnknown(maxAge)
  // Duration clamps a negative or NaN input to zero: refused here, not read as "everything is old".
  const negative =
    (typeof maxAge === "number" && !(maxAge >= 0)) || (typeof maxAge === "string" && maxAge.trim().startsWith("-"))
  if (maxAge !== undefined && (negative || Option.isNone(age) || !Duration.isFinite(age.value))) {
    return Either.left(new InvalidInput({ field: "maxAge", reason: `${String(maxAge)} is not a finite duration` }))
  }
  return Either.right({ maxAge: age, maxCount: Option.fromNullable(maxCount) })
}

/**
 * The time before which a policy removes events, given the current time:
 * `None` when it has no `maxAge`.
 *
 * @since 0.2.0
 * @category decisions
 */
export const cutoff = (policy: CheckedPolicy, nowMillis: number): Option.Option<Date> =>
  Option.map(policy.maxAge, (age) => new Date(nowMillis - Duration.toMillis(age)))

/**
 * The first version a policy keeps of a stream (ignoring snapshots): the
 * later of the newest `maxCount` events' first and the first event recorded
 * within `maxAge` (one past the stream's version when every event is older).
 *
 * @since 0.2.0
 * @category decisions
 */
export const keepFrom = (policy: CheckedPolicy, extent: Extent): number => {
  let from = extent.truncatedBefore
  if (Option.isSome(policy.maxCount)) from = Math.max(from, extent.version - policy.maxCount.value + 1)
  if (Option.isSome(policy.maxAge)) from = Math.max(from, extent.youngFrom ?? extent.version + 1)
  return from
}

/**
 * What retention does to a stream (see {@link Decision}): cut where the
 * policy says, never past the newest snapshot of the snapshot version
 * `expected` (another version's counts as none), nor past its lowest dead
 * letter.
 *
 * @example
 * ```ts
 * import { Retention } from "@mire/core"
 * import { Either, Option } from "effect"
 *
 * const policy = Either.getOrThrow(Retention.validate({ maxCount: 10 }))
 * const extent = {
 *   version: 100, truncatedBefore: 1, snapshotVersion: 80, snapshotSchemaVersion: 2, deadLetterFrom: null, deleted: false, youngFrom: null
 * }
 * // The newest 10 events are 91..100, but the snapshot at 80 is the furthest a cut may go.
 * assert.deepStrictEqual(Retention.decide(policy, extent, 2), { _tag: "Truncate", before: 80, wanted: 91, limitedBy: "snapshot" })
 * // An aggregate whose snapshots are now version 3 cannot load from it: nothing is removed.
 * assert.deepStrictEqual(Retention.decide(policy, extent, 3), { _tag: "NoSnapshot", wanted: 91 })
 * ```
 * @since 0.2.0
 * @category decisions
 */
export const decide = (policy: CheckedPolicy, extent: Extent, expected: number): Decision => {
  if (extent.deleted) return { _tag: "Keep" }
  const wanted = keepFrom(policy, extent)
  if (wanted <= extent.truncatedBefore) return { _tag: "Keep" }
  const snapshot = usableSnapshot(extent, expected) ?? 0
  if (snapshot <= extent.truncatedBefore) return { _tag: "NoSnapshot", wanted }
  const deadLetter = extent.deadLetterFrom ?? Number.POSITIVE_INFINITY
  if (deadLetter <= extent.truncatedBefore) return { _tag: "DeadLettered", wanted, deadLetterFrom: deadLetter }
  const before = Math.min(wanted, snapshot, deadLetter)
  const limitedBy = before === wanted ? null : deadLetter <= snapshot ? "deadLetter" : "snapshot"
  return { _tag: "Truncate", before, wanted, limitedBy }
}

/**
 * An explicit truncation of `streamId` before version `before`: `None` when
 * it is already truncated that far (nothing to do), `Some(before)` when
 * versions `truncatedBefore..before-1` go. Refused (changing nothing) for a
 * deleted stream, a version past the stream's, one past its newest snapshot
 * of the snapshot version `expected` (`SnapshotRequired`: the snapshot is
 * the stream's new base and its own event stays; one of another version
 * counts as none), or one past its lowest dead letter (`DeadLetterPending`).
 *
 * @example
 * ```ts
 * import { Retention } from "@mire/core"
 * import { Either, Option } from "effect"
 *
 * const extent = {
 *   version: 50, truncatedBefore: 1, snapshotVersion: 40, snapshotSchemaVersion: 1, deadLetterFrom: null, deleted: false, youngFrom: null
 * }
 * const tag = (result: ReturnType<typeof Retention.truncation>) => Either.getLeft(result).pipe(Option.map((e) => e._tag), Option.getOrNull)
 * assert.deepStrictEqual(Retention.truncation("account-1", extent, 40, 1), Either.right(Option.some(40)))
 * assert.strictEqual(tag(Retention.truncation("account-1", extent, 41, 1)), "SnapshotRequired")
 * // A snapshot of snapshot version 1 is no base for an aggregate that now reads version 2.
 * assert.strictEqual(tag(Retention.truncation("account-1", extent, 40, 2)), "SnapshotRequired")
 * assert.strictEqual(tag(Retention.truncation("account-1", { ...extent, deadLetterFrom: 7 }, 40, 1)), "DeadLetterPending")
 * ```
 * @since 0.2.0
 * @category decisions
 */
export const truncation = (
  streamId: string,
  extent: Extent,
  before: number,
  expected: number
): Either.Either<Option.Option<number>, InvalidInput | SnapshotRequired | DeadLetterPending | StreamDeleted> => {
  if (extent.deleted) return Either.left(new StreamDeleted({ streamId, tombstoneVersion: extent.version }))
  if (before > extent.version) {
    return Either.left(
      new InvalidInput({ field: "before", reason: `v${before} is past the stream's version (v${extent.version})` })
    )
  }
  if (before <= extent.truncatedBefore) return Either.right(Option.none())
  if (extent.snapshotVersion !== null && extent.snapshotSchemaVersion !== expected) {
    const unusable = { schemaVersion: extent.snapshotSchemaVersion ?? 0, expected }
    return Either.left(new SnapshotRequired({ streamId, before, snapshotVersion: extent.snapshotVersion, unusable }))
  }
  if (extent.snapshotVersion === null || extent.snapshotVersion < before) {
    return Either.left(new SnapshotRequired({ streamId, before, snapshotVersion: extent.snapshotVersion }))
  }
  if (extent.deadLetterFrom !== null && extent.deadLetterFrom < before) {
    return Either.left(new DeadLetterPending({ streamId, before, deadLetterVersion: extent.deadLetterFrom }))
  }
  return Either.right(Option.some(before))
}

/**
 * What retention did (or, in a dry run, would do) to one stream. `removed`
 * counts the events removed (in a dry run: the versions that would go).
 *
 * @since 0.2.0
 * @category models
 */
export interface Outcome {
  readonly streamId: string
  readonly decision: Decision
  readonly removed: number
}

/**
 * What retention did to a category: streams examined, streams truncated,
 * events removed, how many truncations the newest snapshot stopped short
 * of the policy, and the streams the policy would truncate (further) but
 * that have no snapshot past their current base to truncate to (nothing
 * removed: their count, and the first {@link sampleSize} of their ids).
 * `limitedByDeadLetters` counts the streams a dead letter stopped short of
 * the policy (some removed, or none).
 *
 * @since 0.2.0
 * @category models
 */
export interface Report {
  readonly dryRun: boolean
  readonly streams: number
  readonly truncated: number
  readonly eventsRemoved: number
  readonly limitedBySnapshot: number
  readonly limitedByDeadLetters: number
  readonly skippedNoSnapshot: number
  readonly skippedSample: ReadonlyArray<string>
}

/**
 * How many skipped stream ids a {@link Report} names.
 *
 * @since 0.2.0
 * @category models
 */
export const sampleSize = 100

/**
 * The report of nothing done yet.
 *
 * @since 0.2.0
 * @category constructors
 */
export const emptyReport = (dryRun: boolean): Report => ({
  dryRun,
  streams: 0,
  truncated: 0,
  eventsRemoved: 0,
  limitedBySnapshot: 0,
  limitedByDeadLetters: 0,
  skippedNoSnapshot: 0,
  skippedSample: []
})

/**
 * Adds one stream's outcome to a report.
 *
 * @since 0.2.0
 * @category combinators
 */
export const record = (report: Report, outcome: Outcome): Report => {
  const decision = outcome.decision
  return {
    dryRun: report.dryRun,
    streams: report.streams + 1,
    truncated: report.truncated + (decision._tag === "Truncate" && outcome.removed > 0 ? 1 : 0),
    eventsRemoved: report.eventsRemoved + outcome.removed,
    limitedBySnapshot: report.limitedBySnapshot + (decision._tag === "Truncate" && decision.limitedBy === "snapshot" ? 1 : 0),
    limitedByDeadLetters:
      report.limitedByDeadLetters +
      ((decision._tag === "Truncate" && decision.limitedBy === "deadLetter") || decision._tag === "DeadLettered" ? 1 : 0),
    skippedNoSnapshot: report.skippedNoSnapshot + (decision._tag === "NoSnapshot" ? 1 : 0),
    skippedSample:
      decision._tag === "NoSnapshot" && report.skippedSample.length < sampleSize
        ? [...report.skippedSample, outcome.streamId]
        : report.skippedSample
  }
}
