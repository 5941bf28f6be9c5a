/**
 * The in-memory `SubscriptionStore`: polls the in-memory log behind its
 * modelled xmin horizon, exactly as the Postgres store polls behind
 * `pg_snapshot_xmin`.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as Cursor from "../../Cursor.js"
import * as Lease from "../../Lease.js"
import * as Partition from "../../Partition.js"
import type { RecordedEvent } from "../../RecordedEvent.js"
import type * as Subscription from "../../Subscription.js"
import type * as SubscriptionStore from "../../SubscriptionStore.js"
import * as MemoryDeadLetters from "./deadLetterStore.js"
import * as Memory from "./eventStore.js"

const matches = (filter: Subscription.Filter) => {
  const wanted = filter.categories === undefined ? undefined : new Set(filter.categories)
  const shard = filter.shard
  return (event: RecordedEvent) =>
    (wanted === undefined || wanted.has(event.category)) &&
    (shard === undefined || Partition.shardOf(event.streamId, shard.count) === shard.index)
}

const firstAfter = (events: ReadonlyArray<RecordedEvent>, after: Cursor.Cursor): number => {
  let lo = 0
  let hi = events.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (Cursor.order(Cursor.of(events[mid]!), after) <= 0) lo = mid + 1
    else hi = mid
  }
  return lo
}

/**
 * Builds the store over an in-memory event store's driver.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (mem: Memory.Driver): SubscriptionStore.SubscriptionStore => ({
  poll: (filter, after, limit) =>
    Effect.sync(() => {
      const horizon = mem.xmin()
      const wanted = matches(filter)
      const out: Array<RecordedEvent> = []
      for (let i = firstAfter(mem.byCursor, after); i < mem.byCursor.length && out.length < limit; i++) {
        const event = mem.byCursor[i]!
        if (event.transactionId >= horizon) break
        if (wanted(event)) out.push(event)
      }
      return out
    }),
  baseline: (streamIds, upTo) =>
    Effect.sync(() => {
      const result = new Map<string, number>()
      for (const streamId of streamIds) {
        const events = mem.streams.get(streamId)?.events ?? []
        for (let i = events.length - 1; i >= 0; i--) {
          if (Cursor.order(Cursor.of(events[i]!), upTo) <= 0) {
            result.set(streamId, events[i]!.streamVersion)
            break
          }
        }
      }
      return result
    }),
  missing: (wanted) =>
    Effect.sync(() =>
      wanted.flatMap(({ streamId, version }) => {
        const stream = mem.streams.get(streamId)
        const events = stream?.events ?? []
        const firstRetained = stream?.truncatedBefore ?? 1
        // Removed by design (deleted or truncated): reported with the first version kept.
        if (version < firstRetained) return [{ streamId, version, firstRetained }]
        // Versions are 1..n at their index unless rows were deleted (then they shift left).
        if (events[version - 1]?.streamVersion === version) return []
        return events.some((e) => e.streamVersion === version) ? [] : [{ streamId, version }]
      })
    ),
  inversionBelow: (filter, upTo) =>
    Effect.sync(() => {
      const wanted = matches(filter)
      const firstAfter_ = new Map<string, number>()
      for (let i = firstAfter(mem.byCursor, upTo); i < mem.byCursor.length; i++) {
        const event = mem.byCursor[i]!
        if (!wanted(event)) continue
        const first = firstAfter_.get(event.streamId)
        if (first === undefined || event.streamVersion < first) firstAfter_.set(event.streamId, event.streamVersion)
      }
      let lowest: Cursor.Cursor | undefined
      for (const [streamId, first] of firstAfter_) {
        for (const event of mem.streams.get(streamId)?.events ?? []) {
          const cursor = Cursor.of(event)
          if (event.streamVersion > first && Cursor.order(cursor, upTo) <= 0) {
            lowest = lowest === undefined ? cursor : Cursor.min(lowest, cursor)
          }
        }
      }
      return Option.fromNullable(lowest)
    }),
  prefixes: (filter, after, upTo) =>
    Effect.sync(() => {
      const wanted = matches(filter)
      const result = new Map<string, number>()
      for (let i = firstAfter(mem.byCursor, after); i < mem.byCursor.length; i++) {
        const event = mem.byCursor[i]!
        if (Cursor.order(Cursor.of(event), upTo) > 0) break
        if (!wanted(event) || result.has(event.streamId)) continue
        let prefix = 0
        let firstAbove = Number.POSITIVE_INFINITY
        for (const e of mem.streams.get(event.streamId)?.events ?? []) {
          if (Cursor.order(Cursor.of(e), upTo) > 0) firstAbove = Math.min(firstAbove, e.streamVersion)
          else prefix = Math.max(prefix, e.streamVersion)
        }
        const version = Number.isFinite(firstAbove) ? firstAbove - 1 : prefix
        result.set(event.streamId, version)
      }
      for (const [streamId, version] of result) if (version <= 0) result.delete(streamId)
      return result
    }),
  readCheckpoint: (subscriptionId) =>
    Effect.sync(() =>
      Option.map(
        Option.filter(Option.fromNullable(mem.subscriptions.get(subscriptionId)), (row) => row.checkpointed),
        (row) => ({ cursor: row.cursor, delivered: row.delivered })
      )
    ),
  initCheckpoint: (subscriptionId, checkpoint) =>
    Effect.sync(() => {
      const row = mem.subscriptions.get(subscriptionId)
      if (row === undefined) mem.subscriptions.set(subscriptionId, Memory.newRow(checkpoint))
      else if (row.checkpointed) return { cursor: row.cursor, delivered: row.delivered }
      else {
        row.cursor = checkpoint.cursor
        row.delivered = checkpoint.delivered
        row.checkpointed = true
        row.failure = undefined
      }
      return checkpoint
    }),
  locate: (point) =>
    Effect.sync(() => {
      if (point === "head") {
        // Events older than the horizon are a prefix of the cursor order (it sorts by transaction id first).
        const horizon = mem.xmin()
        let lo = 0
        let hi = mem.byCursor.length
        while (lo < hi) {
          const mid = (lo + hi) >>> 1
          if (mem.byCursor[mid]!.transactionId < horizon) lo = mid + 1
          else hi = mid
        }
        return Option.some(lo === 0 ? Cursor.start : Cursor.of(mem.byCursor[lo - 1]!))
      }
      // Only committed events are in the log, in cursor order.
      if (point === "last") return Option.map(Option.fromNullable(mem.byCursor[mem.byCursor.length - 1]), Cursor.of)
      if ("position" in point) {
        let lo = 0
        let hi = mem.log.length
        while (lo < hi) {
          const mid = (lo + hi) >>> 1
          if (mem.log[mid]!.globalPosition < point.position) lo = mid + 1
          else hi = mid
        }
        return Option.map(Option.fromNullable(mem.log[lo]), Cursor.of)
      }
      const at = point.time.getTime()
      return Option.map(
        Option.fromNullable(mem.byCursor.find((event) => event.recordedAt.getTime() >= at)),
        Cursor.of
      )
    }),
  writeCheckpoint: (subscriptionId, checkpoint, fence) =>
    Effect.sync(() => {
      const row = mem.subscriptions.get(subscriptionId)
      if (row === undefined) {
        if (Option.isSome(fence)) return false
        mem.subscriptions.set(subscriptionId, Memory.newRow(checkpoint))
        return true
      }
      if (Option.isSome(fence) && !Lease.holds(Memory.leaseOf(subscriptionId, row), fence.value)) return false
      row.cursor = checkpoint.cursor
      row.delivered = checkpoint.delivered
      row.checkpointed = true
      row.failure = undefined
      return true
    }),
  describe: (subscriptionId, filter) =>
    Effect.sync(() => {
      const row = mem.subscriptions.get(subscriptionId)
      if (row !== undefined) row.categories = filter.categories
    }),
  recordFailure: (subscriptionId, failure) =>
    Effect.map(Clock.currentTimeMillis, (now) => {
      const row = mem.subscriptions.get(subscriptionId)
      if (row !== undefined) row.failure = { message: failure, at: new Date(now) }
    }),
  // Rows that hold a checkpoint or a live lease: a refused runner's released lease row counts for nothing.
  shardIds: (subscriptionId) =>
    Effect.map(Clock.currentTimeMillis, (now) =>
      Array.from(mem.subscriptions.entries()).flatMap(([id, row]) =>
        Option.isSome(Partition.parse(subscriptionId, id)) &&
        (row.checkpointed || !Lease.isAcquirable(Memory.leaseOf(id, row), now))
          ? [id]
          : []
      )
    ),
  forget: (subscriptionIds) =>
    Effect.map(Clock.currentTimeMillis, (now) =>
      subscriptionIds.filter((id) => {
        const row = mem.subscriptions.get(id)
        if (row === undefined) return false
        if (!Lease.isAcquirable(Memory.leaseOf(id, row), now)) return true
        mem.subscriptions.delete(id)
        // Its dead letters go with it (nothing would ever redeliver them), as on Postgres.
        MemoryDeadLetters.forget(mem, [id])
        return false
      })
    ),
  report: (subscriptionId) =>
    Effect.sync(() =>
      Option.map(Option.fromNullable(mem.subscriptions.get(subscriptionId)), (row) => ({
        categories: Option.fromNullable(row.categories),
        failure: Option.fromNullable(row.failure)
      }))
    ),
  wakeups: Stream.fromPubSub(mem.commits).pipe(Stream.flattenIterables),
  lag: (filter, after) =>
    Effect.map(Clock.currentTimeMillis, (now) => {
      const wanted = matches(filter)
      let events = 0
      let oldest = Number.POSITIVE_INFINITY
      for (let i = firstAfter(mem.byCursor, after); i < mem.byCursor.length; i++) {
        const event = mem.byCursor[i]!
        if (!wanted(event)) continue
        events++
        oldest = Math.min(oldest, event.recordedAt.getTime())
      }
      let oldestTransaction = now
      for (const since of mem.inflight.values()) oldestTransaction = Math.min(oldestTransaction, since)
      return {
        events,
        ageMillis: events === 0 ? 0 : Math.max(0, now - oldest),
        oldestTransactionMillis: now - oldestTransaction
      }
    })
})
