/**
 * The in-memory `LeaseStore`: the same rules as Postgres, with time from
 * Effect's `Clock` (so `TestClock` drives expiry), and a row lock shared by
 * acquisitions and fenced commits, as the row lock of `es_subscriptions` does
 * on Postgres.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Lease from "../../Lease.js"
import type * as LeaseStore from "../../LeaseStore.js"
import * as Memory from "./eventStore.js"

const rowKey = (subscriptionId: string) => `subscription:${subscriptionId}`

/**
 * Builds the store over an in-memory event store's driver.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (mem: Memory.Driver): LeaseStore.LeaseStore => {
  const statusOf = (subscriptionId: string): Lease.LeaseStatus | undefined => {
    const row = mem.subscriptions.get(subscriptionId)
    return row === undefined ? undefined : Memory.leaseOf(subscriptionId, row)
  }
  const locked = <A, E, R>(subscriptionId: string, effect: Effect.Effect<A, E, R>) =>
    mem.transaction(Effect.zipRight(mem.lock(rowKey(subscriptionId)), effect))

  return {
    acquire: (subscriptionId, workerId, ttl) =>
      locked(
        subscriptionId,
        Effect.map(Clock.currentTimeMillis, (now) => {
          if (!Lease.isAcquirable(statusOf(subscriptionId), now)) return Option.none()
          const row = mem.subscriptions.get(subscriptionId) ?? Memory.newRow()
          row.workerId = workerId
          row.fenceToken += 1n
          row.leasedUntil = now + Duration.toMillis(ttl)
          mem.subscriptions.set(subscriptionId, row)
          return Option.some(statusOf(subscriptionId)!)
        })
      ),
    renew: (subscriptionId, fence, ttl) =>
      locked(
        subscriptionId,
        Effect.map(Clock.currentTimeMillis, (now) => {
          const row = mem.subscriptions.get(subscriptionId)
          if (row === undefined || !Lease.holds(statusOf(subscriptionId), fence)) return false
          row.leasedUntil = now + Duration.toMillis(ttl)
          return true
        })
      ),
    release: (subscriptionId, fence) =>
      locked(
        subscriptionId,
        Effect.sync(() => {
          const row = mem.subscriptions.get(subscriptionId)
          if (row !== undefined && Lease.holds(statusOf(subscriptionId), fence)) row.leasedUntil = Number.NEGATIVE_INFINITY
        })
      ),
    status: (subscriptionId) => Effect.sync(() => Option.fromNullable(statusOf(subscriptionId))),
    reset: (subscriptionId, checkpoint, force) =>
      locked(
        subscriptionId,
        Effect.map(Clock.currentTimeMillis, (now) => {
          const decision = Lease.decideReset(statusOf(subscriptionId), now, force)
          const row = mem.subscriptions.get(subscriptionId)
          if (decision._tag !== "Reset" || row === undefined) return decision
          row.cursor = checkpoint.cursor
          row.delivered = checkpoint.delivered
          row.checkpointed = true
          row.failure = undefined
          row.fenceToken = decision.fenceToken
          row.leasedUntil = Number.NEGATIVE_INFINITY
          return decision
        })
      ),
    commitFenced: (subscriptionId, fence, checkpoint, effect) =>
      // As on Postgres, the row is locked only by the final fenced write, so a takeover is never
      // blocked by a long handler; the lock then holds until this transaction commits.
      mem.transaction(
        Effect.flatMap(effect, (a) =>
          locked(
            subscriptionId,
            Effect.suspend(() => {
              const row = mem.subscriptions.get(subscriptionId)
              if (row === undefined || !Lease.holds(statusOf(subscriptionId), fence)) {
                return Effect.fail(new Lease.LeaseLost({ subscriptionId, ...fence }))
              }
              row.cursor = checkpoint.cursor
              row.delivered = checkpoint.delivered
              row.checkpointed = true
              row.failure = undefined
              return Effect.succeed(a)
            })
          )
        )
      )
  }
}
