/**
 * A subscription's checkpoint: the cursor it persists and, per stream, the
 * version delivered past that cursor (so that a restart neither delivers
 * those events again nor takes them for an ordering violation). A
 * subscription computes it with `HoldBack.checkpoint`; a store persists it
 * (`SubscriptionStore.writeCheckpoint`, `LeaseStore.commitFenced`).
 *
 * @since 0.1.0
 */
import type * as Cursor from "./Cursor.js"

/**
 * A checkpoint: the cursor it persists and the versions delivered past it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Checkpoint {
  readonly cursor: Cursor.Cursor
  readonly delivered: ReadonlyMap<string, number>
}

/**
 * A checkpoint at a cursor, with nothing delivered past it.
 *
 * @example
 * ```ts
 * import { Checkpoint, Cursor } from "@mire/core"
 *
 * const fresh = Checkpoint.at(Cursor.start)
 * assert.strictEqual(fresh.delivered.size, 0)
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const at = (cursor: Cursor.Cursor): Checkpoint => ({ cursor, delivered: new Map() })
