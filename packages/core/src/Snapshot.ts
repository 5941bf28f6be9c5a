/**
 * Snapshots: a cached fold of a stream up to a version, stored apart from
 * the event log so subscriptions and projections never see them.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import type { SnapshotDefinition } from "./Aggregate.js"

/**
 * A snapshot as stored: its stream, the stream version it folds up to, the
 * snapshot (state-shape) version and the encoded state.
 *
 * @since 0.1.0
 * @category models
 */
export interface StoredSnapshot {
  readonly streamId: string
  readonly streamVersion: number
  readonly snapshotVersion: number
  readonly state: unknown
}

/**
 * Should a save from `before` to `after` write a snapshot? Yes when it
 * crossed a multiple of `every`.
 *
 * @example
 * ```ts
 * import { Snapshot } from "@mire/core"
 *
 * // Saving from version 95 to 103 crossed 100.
 * assert.strictEqual(Snapshot.isDue({ every: 100 }, 95, 103), true)
 * assert.strictEqual(Snapshot.isDue({ every: 100 }, 101, 103), false)
 * ```
 * @since 0.1.0
 */
export const isDue = (policy: { readonly every: number }, before: number, after: number): boolean =>
  policy.every > 0 && Math.floor(after / policy.every) > Math.floor(before / policy.every)

/**
 * Why a stored snapshot was not used.
 *
 * @since 0.1.0
 * @category models
 */
export type Rejection = "old-version" | "undecodable" | "beyond-stream"

/**
 * Decodes a stored snapshot's state, or says why it must be ignored.
 *
 * @since 0.1.0
 */
export const decode = <S>(
  definition: SnapshotDefinition<S>,
  stored: StoredSnapshot
): Effect.Effect<S, { readonly rejection: Rejection; readonly detail: string }> =>
  stored.snapshotVersion !== definition.version
    ? Effect.fail({
        rejection: "old-version" as const,
        detail: `snapshot version ${stored.snapshotVersion}, expected ${definition.version}`
      })
    : definition.decode(stored.state).pipe(
        Effect.mapError((e) => ({
          rejection: "undecodable" as const,
          detail: ParseResult.TreeFormatter.formatErrorSync(e)
        }))
      )

/**
 * Encodes a state for storage; `None` when it fails its Schema (the save
 * still succeeds, without a snapshot).
 *
 * @since 0.1.0
 */
export const encode = <S>(
  definition: SnapshotDefinition<S>,
  streamId: string,
  streamVersion: number,
  state: S
): Effect.Effect<Option.Option<StoredSnapshot>> =>
  definition.encode(state).pipe(
    Effect.map((encoded) =>
      Option.some({ streamId, streamVersion, snapshotVersion: definition.version, state: encoded })
    ),
    Effect.orElseSucceed(() => Option.none())
  )
