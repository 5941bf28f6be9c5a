/**
 * The in-memory `DeadLetterStore`: the same rules as the Postgres store. Its
 * writes are applied when the in-memory transaction they run in commits
 * (never when it rolls back), and its fence takes the subscription's row
 * lock, as the fenced commit of the in-memory `LeaseStore` does.
 *
 * @since 0.2.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as DeadLetters from "../../DeadLetters.js"
import * as Lease from "../../Lease.js"
import * as Partition from "../../Partition.js"
import type { RecordedEvent } from "../../RecordedEvent.js"
import * as Memory from "./eventStore.js"

/** The lock key of a subscription's row (the one the in-memory `LeaseStore` takes). */
const rowKey = (subscriptionId: string) => `subscription:${subscriptionId}`

type Row = { -readonly [K in keyof DeadLetters.DeadLetter]: DeadLetters.DeadLetter[K] }

/** The committed event at `position`, by binary search of the log (ordered by position). */
const eventAt = (log: ReadonlyArray<RecordedEvent>, position: bigint): RecordedEvent | undefined => {
  let lo = 0
  let hi = log.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (log[mid]!.globalPosition < position) lo = mid + 1
    else hi = mid
  }
  const found = log[lo]
  return found !== undefined && found.globalPosition === position ? found : undefined
}

/** The stored id is `subscriptionId` or one of its shards (`DeadLetters.covers`, not imported: it imports this module). */
const covers = (subscriptionId: string, storedId: string): boolean =>
  storedId === subscriptionId || Option.isSome(Partition.parse(subscriptionId, storedId))

/** The dead letters of each in-memory store, by its driver (the in-memory subscription store's `forget` deletes some). */
const stores = new WeakMap<Memory.Driver, Map<bigint, Row>>()

const rowsOf = (mem: Memory.Driver): Map<bigint, Row> => {
  const found = stores.get(mem)
  if (found !== undefined) return found
  const rows = new Map<bigint, Row>()
  stores.set(mem, rows)
  // Truncation never cuts past a stream's lowest dead-lettered version (any subscription, any status).
  mem.deadLetterFloors.push((streamId) => {
    let low: number | null = null
    for (const r of rows.values()) if (r.streamId === streamId && (low === null || r.streamVersion < low)) low = r.streamVersion
    return low
  })
  return rows
}

/**
 * Deletes the dead letters of subscriptions that are forgotten (the rows of
 * a partition count a rebuild replaced), as the Postgres `forget` does in
 * the same statement.
 *
 * @since 0.2.0
 * @category internal
 */
export const forget = (mem: Memory.Driver, subscriptionIds: ReadonlyArray<string>): void => {
  const gone = new Set(subscriptionIds)
  const rows = rowsOf(mem)
  for (const [id, row] of rows) if (gone.has(row.subscriptionId)) rows.delete(id)
}

const byStreamAndVersion = (a: Row, b: Row) =>
  a.streamId < b.streamId ? -1 : a.streamId > b.streamId ? 1 : a.streamVersion - b.streamVersion

/**
 * Builds the store over an in-memory event store's driver.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (mem: Memory.Driver): DeadLetters.DeadLetterStore => {
  const rows = rowsOf(mem)
  let nextId = 1n

  const of = (subscriptionId: string): Array<Row> => [...rows.values()].filter((r) => r.subscriptionId === subscriptionId)
  const ofProjection = (subscriptionId: string): Array<Row> =>
    [...rows.values()].filter((r) => covers(subscriptionId, r.subscriptionId))
  const selected = (selection: DeadLetters.Selection): Array<Row> =>
    selection._tag === "All"
      ? ofProjection(selection.subscriptionId)
      : selection.ids.flatMap((id) => {
          const row = rows.get(id)
          return row === undefined ? [] : [row]
        })
  const copy = (row: Row): DeadLetters.DeadLetter => ({ ...row })

  return {
    record: (subscriptionId, letters) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        mem.onCommit(() => {
          for (const letter of letters) {
            const exists = [...rows.values()].some(
              (r) => r.subscriptionId === subscriptionId && r.globalPosition === letter.globalPosition
            )
            if (exists) continue
            while (rows.has(nextId)) nextId++
            const id = nextId++
            rows.set(id, {
              id,
              subscriptionId,
              globalPosition: letter.globalPosition,
              streamId: letter.streamId,
              streamVersion: letter.streamVersion,
              eventType: letter.eventType,
              error: letter.error,
              attempts: letter.attempts,
              firstFailedAt: new Date(now),
              lastFailedAt: new Date(now),
              status: letter.status
            })
          }
        })
      ),
    parkedStreams: (subscriptionId) => Effect.sync(() => new Set(of(subscriptionId).map((r) => r.streamId))),
    due: (subscriptionId, limit) =>
      Effect.sync(() => {
        const sorted = of(subscriptionId).sort(byStreamAndVersion)
        const out: Array<DeadLetters.Due> = []
        let i = 0
        while (i < sorted.length && out.length < limit) {
          const streamId = sorted[i]!.streamId
          let j = i
          while (j < sorted.length && sorted[j]!.streamId === streamId) j++
          if (sorted[i]!.status !== "failed") {
            for (const row of sorted.slice(i, Math.min(j, i + limit - out.length))) {
              out.push({ letter: copy(row), event: Option.fromNullable(eventAt(mem.log, row.globalPosition)) })
            }
          }
          i = j
        }
        return out
      }),
    resolve: (subscriptionId, id) =>
      mem.onCommit(() => {
        if (rows.get(id)?.subscriptionId === subscriptionId) rows.delete(id)
      }),
    failAgain: (subscriptionId, id, failure) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        mem.onCommit(() => {
          const row = rows.get(id)
          if (row === undefined || row.subscriptionId !== subscriptionId) return
          row.status = "failed"
          row.error = failure.error
          row.attempts += failure.attempts
          row.lastFailedAt = new Date(now)
        })
      ),
    fenced: (subscriptionId, fence, effect) =>
      mem.transaction(
        Effect.flatMap(effect, (a) =>
          Effect.zipRight(
            mem.lock(rowKey(subscriptionId)),
            Effect.suspend(() => {
              const row = mem.subscriptions.get(subscriptionId)
              return row !== undefined && Lease.holds(Memory.leaseOf(subscriptionId, row), fence)
                ? Effect.succeed(a)
                : Effect.fail(new Lease.LeaseLost({ subscriptionId, ...fence }))
            })
          )
        )
      ),
    list: (subscriptionId) =>
      Effect.sync(() =>
        (Option.isSome(subscriptionId) ? ofProjection(subscriptionId.value) : [...rows.values()])
          .sort((a, b) => (a.subscriptionId < b.subscriptionId ? -1 : a.subscriptionId > b.subscriptionId ? 1 : a.id < b.id ? -1 : 1))
          .map(copy)
      ),
    retry: (selection) =>
      Effect.sync(() => {
        let marked = 0
        for (const row of selected(selection)) {
          if (row.status !== "failed") continue
          row.status = "retry"
          marked++
        }
        return marked
      }),
    discard: (selection) =>
      Effect.sync(() => {
        let deleted = 0
        for (const row of selected(selection)) if (rows.delete(row.id)) deleted++
        return deleted
      }),
    counts: Effect.sync(() => {
      const result = new Map<string, DeadLetters.Counts>()
      for (const { subscriptionId, status } of rows.values()) {
        const counts = result.get(subscriptionId) ?? { failed: 0, parked: 0, retry: 0 }
        result.set(subscriptionId, { ...counts, [status]: counts[status] + 1 })
      }
      return result
    })
  }
}
