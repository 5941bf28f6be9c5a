/**
 * Leases: which worker drives a subscription. A lease lives in the
 * subscription's row (no advisory locks, so it works behind PgBouncer and RDS
 * Proxy). Every acquisition bumps the fence token; every checkpoint and every
 * transactional handler's transaction commits only while the token is still
 * the writer's, so a paused leader that wakes after a takeover cannot clobber
 * its successor.
 *
 * This module holds the rules (who may acquire, whether a fence holds) and
 * the {@link Fence} every fenced write presents; `LeaseStore` is the
 * storage service that applies them.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type { StoreError } from "./EventStoreError.js"
import * as LeaseStore from "./LeaseStore.js"

/**
 * A lease as stored.
 *
 * @since 0.1.0
 * @category models
 */
export interface LeaseStatus {
  readonly subscriptionId: string
  readonly workerId: string | null
  readonly fenceToken: bigint
  readonly leasedUntil: Date
}

/**
 * A held lease: the fence a writer presents. A checkpoint write or a
 * transactional handler's transaction commits only while the lease is held
 * by `workerId` with `fenceToken`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Fence {
  readonly workerId: string
  readonly fenceToken: bigint
}

/**
 * The lease is no longer ours: it expired and another worker took it, so the
 * checkpoint (and the transaction it closes) was refused.
 *
 * @since 0.1.0
 * @category errors
 */
export class LeaseLost extends Schema.TaggedError<LeaseLost>()("LeaseLost", {
  subscriptionId: Schema.String,
  workerId: Schema.String,
  fenceToken: Schema.BigIntFromSelf
}) {
  override get message(): string {
    return `lease on ${this.subscriptionId} lost by ${this.workerId} (fence ${this.fenceToken})`
  }
}

/**
 * Can a lease be acquired now? Only when it is free (never held, released)
 * or expired. Both stores apply this rule.
 *
 * @since 0.1.0
 */
export const isAcquirable = (lease: LeaseStatus | undefined, now: number): boolean =>
  lease === undefined || lease.workerId === null || lease.leasedUntil.getTime() <= now

/**
 * Does a fence still match the lease?
 *
 * @since 0.1.0
 */
export const holds = (lease: LeaseStatus | undefined, fence: Fence): boolean =>
  lease !== undefined && lease.workerId === fence.workerId && lease.fenceToken === fence.fenceToken

/**
 * The lease of a subscription, as stored.
 *
 * @example
 * ```ts
 * import { Lease } from "@mire/core"
 * import { Effect, Option } from "effect"
 *
 * const program = Effect.gen(function* () {
 *   const lease = yield* Lease.status("orders-projection")
 *   yield* Option.match(lease, {
 *     onNone: () => Effect.log("never taken"),
 *     onSome: ({ workerId, fenceToken }) => Effect.log(`held by ${workerId} with fence token ${fenceToken}`)
 *   })
 * })
 * ```
 * @since 0.1.0
 * @category accessors
 */
export const status = (
  subscriptionId: string
): Effect.Effect<Option.Option<LeaseStatus>, StoreError, LeaseStore.LeaseStore> =>
  Effect.flatMap(LeaseStore.LeaseStore, (store) => store.status(subscriptionId))

/**
 * Milliseconds of a duration, rounded up (for SQL intervals).
 *
 * @since 0.1.0
 */
export const millis = (duration: Duration.Duration): number => Math.ceil(Duration.toMillis(duration))

/**
 * A reset was refused: a worker holds the subscription's lease. Stop it
 * first, or reset with `force`, which fences it out (its next checkpoint is
 * refused and it returns to standby).
 *
 * @since 0.2.0
 * @category errors
 */
export class LeaseHeld extends Schema.TaggedError<LeaseHeld>()("LeaseHeld", {
  subscriptionId: Schema.String,
  workerId: Schema.String,
  fenceToken: Schema.BigIntFromSelf,
  leasedUntil: Schema.DateFromSelf
}) {
  override get message(): string {
    return `${this.subscriptionId} is leased by ${this.workerId} (fence ${this.fenceToken}) until ${this.leasedUntil.toISOString()}: stop it, or reset with force`
  }
}

/**
 * What a reset does to a subscription's row, decided under its row lock:
 * nothing when there is no row (`Unknown`) or a live lease is held and the
 * reset is not forced (`Held`); otherwise (`Reset`) the checkpoint is
 * written, the fence token bumped to `fenceToken` and the lease freed, so
 * any holder, live (`displaced`) or expired but still running, has its next
 * fenced write refused.
 *
 * @since 0.2.0
 * @category models
 */
export type ResetDecision =
  | { readonly _tag: "Unknown" }
  | { readonly _tag: "Held"; readonly lease: LeaseStatus }
  | { readonly _tag: "Reset"; readonly fenceToken: bigint; readonly displaced: LeaseStatus | undefined }

/**
 * Decides a reset of the subscription whose lease is `lease` (undefined: no
 * row) at `now`. Both stores apply it under the row lock.
 *
 * @example
 * ```ts
 * import { Lease } from "@mire/core"
 *
 * const lease = { subscriptionId: "balances", workerId: "w1", fenceToken: 3n, leasedUntil: new Date(60_000) }
 * assert.strictEqual(Lease.decideReset(lease, 0, false)._tag, "Held")
 * assert.deepStrictEqual(Lease.decideReset(lease, 0, true), { _tag: "Reset", fenceToken: 4n, displaced: lease })
 * ```
 * @since 0.2.0
 * @category rules
 */
export const decideReset = (lease: LeaseStatus | undefined, now: number, force: boolean): ResetDecision => {
  if (lease === undefined) return { _tag: "Unknown" }
  const live = !isAcquirable(lease, now)
  if (live && !force) return { _tag: "Held", lease }
  return { _tag: "Reset", fenceToken: lease.fenceToken + 1n, displaced: live ? lease : undefined }
}
