/**
 * The in-memory `WorkerStore`: worker rows in a map of its own, leases read
 * from the driver's subscription rows, time from Effect's `Clock`.
 *
 * @since 0.2.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Rebalance from "../../Rebalance.js"
import type * as WorkerStore from "../../WorkerStore.js"
import * as Memory from "./eventStore.js"

const forgetAfter = 10 // WorkerStore.forgetAfter (a type-only import here: the public module imports this one)

/**
 * Builds the store over an in-memory event store's driver.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (mem: Memory.Driver): WorkerStore.WorkerStore => {
  const rows = new Map<string, { startedAt: number; heartbeatAt: number; unitsKey: string }>()
  const asWorker = (workerId: string, row: { startedAt: number; heartbeatAt: number }): WorkerStore.Worker => ({
    workerId,
    startedAt: new Date(row.startedAt),
    heartbeatAt: new Date(row.heartbeatAt)
  })
  const byId = (a: WorkerStore.Worker, b: WorkerStore.Worker) => (a.workerId < b.workerId ? -1 : a.workerId > b.workerId ? 1 : 0)
  return {
    observe: (workerId, ttl, subscriptionIds) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const ttlMillis = Duration.toMillis(ttl)
        const row = rows.get(workerId)
        const unitsKey = Rebalance.unitsKey(subscriptionIds)
        rows.set(workerId, { startedAt: row?.startedAt ?? now, heartbeatAt: now, unitsKey })
        for (const [id, other] of rows) {
          if (other.heartbeatAt < now - forgetAfter * ttlMillis) rows.delete(id)
        }
        // Peers only: the workers that run the same units (runners of other projections are not counted).
        const workers = Array.from(rows)
          .filter(([, r]) => r.unitsKey === unitsKey && r.heartbeatAt > now - ttlMillis)
          .map(([id, r]) => asWorker(id, r))
          .sort(byId)
        const leases = subscriptionIds.flatMap((id) => {
          const sub = mem.subscriptions.get(id)
          return sub === undefined ? [] : [Memory.leaseOf(id, sub)]
        })
        return { now: new Date(now), workers, leases }
      }),
    leave: (workerId) => Effect.sync(() => void rows.delete(workerId)),
    workers: Effect.sync(() => Array.from(rows, ([id, r]) => asWorker(id, r)).sort(byId))
  }
}
