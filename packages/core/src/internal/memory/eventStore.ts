/**
 * The in-memory event store's driver: the same `EventStore` contract as the
 * Postgres store, in process. It models what the contract depends on: transactions
 * with isolation and all-or-nothing commits, stream locks, transaction ids
 * assigned at a transaction's first write, and the xmin horizon (the oldest
 * transaction still open), so subscriptions hold back exactly as on
 * Postgres.
 *
 * State is mutated only inside synchronous steps, so it is correct under
 * any number of concurrent fibers.
 *
 * The layers live with their concepts (`EventStore.layerMemory`,
 * `SubscriptionStore.layerMemory`, …) and in `InMemory.layer`; this module
 * only builds the shared state they run over.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Schema from "effect/Schema"
import type * as Checkpoint from "../../Checkpoint.js"
import * as Cursor from "../../Cursor.js"
import * as EventStore from "../../EventStore.js"
import { ConcurrencyConflict, StreamArchived, StreamDeleted, StreamNotFound } from "../../EventStoreError.js"
import * as ExpectedVersion from "../../ExpectedVersion.js"
import * as Json from "../json.js"
import { aggregateIdOf, type CommittedEvents, EventMetadata, type JsonObject, type RecordedEvent } from "../../RecordedEvent.js"
import type { LeaseStatus } from "../../Lease.js"
import type * as Retention from "../../Retention.js"
import type { StoredSnapshot } from "../../Snapshot.js"
import * as StreamId from "../../StreamId.js"

/**
 * A subscription's row: its checkpoint and, for projections, its lease.
 *
 * @since 0.1.0
 * @category models
 */
export interface SubscriptionRow {
  cursor: Cursor.Cursor
  delivered: ReadonlyMap<string, number>
  workerId: string | undefined
  fenceToken: bigint
  leasedUntil: number
  /** What it reads (undefined: every category, or not recorded). */
  categories?: ReadonlyArray<string> | undefined
  /** Why it stopped, until its next checkpoint or reset. */
  failure?: { readonly message: string; readonly at: Date } | undefined
  /** Whether a checkpoint was ever written (a row made by a lease acquisition has none). */
  checkpointed: boolean
}

/**
 * A new subscription row: at `checkpoint` (without one: at the start of the
 * log, not checkpointed yet), never leased.
 *
 * @since 0.1.0
 * @category constructors
 */
export const newRow = (checkpoint?: Checkpoint.Checkpoint): SubscriptionRow => ({
  cursor: checkpoint?.cursor ?? Cursor.start,
  delivered: checkpoint?.delivered ?? new Map(),
  workerId: undefined,
  fenceToken: 0n,
  leasedUntil: 0,
  checkpointed: checkpoint !== undefined
})

/**
 * The lease a row holds, as a store reports it (a released lease reads as
 * expired at the epoch).
 *
 * @since 0.1.0
 * @category accessors
 */
export const leaseOf = (subscriptionId: string, row: SubscriptionRow): LeaseStatus => ({
  subscriptionId,
  workerId: row.workerId ?? null,
  fenceToken: row.fenceToken,
  leasedUntil: new Date(Math.max(row.leasedUntil, 0))
})

interface StreamState {
  readonly category: string
  version: number
  events: Array<RecordedEvent>
  /** Archived: read-only, left out of loads and category reads unless asked. */
  archived?: boolean | undefined
  /** Deleted: only its tombstone is left, at `version`. */
  deleted?: boolean | undefined
  /** The first version kept (absent: 1); versions below it were removed by design. */
  truncatedBefore?: number | undefined
}

/**
 * An open in-memory transaction.
 *
 * @since 0.1.0
 * @category models
 */
export interface Transaction {
  readonly id: number
  xid: bigint | undefined
  staged: Map<string, StreamState>
  stagedSnapshots: Map<string, StoredSnapshot>
  /** Events this transaction wrote, in write order. */
  readonly written: Array<RecordedEvent>
  readonly locks: Set<string>
  readonly onCommit: Array<() => void>
}

// What Postgres hands back for a stored value: `JSON.parse` of jsonb's text (keys in jsonb's
// order, the prototype always Object.prototype), metadata through the same Schema as its rows.
const parseObject = (text: string): JsonObject => {
  const value = Json.parseAsJsonb(text)
  return Json.isPlainObject(value) ? value : {}
}

const decodeMetadata = Schema.decodeUnknownOption(EventMetadata)

const parseMetadata = (text: string): EventMetadata =>
  Option.getOrElse(decodeMetadata(Json.parseAsJsonb(text)), (): EventMetadata => ({}))

const positionOrder = (a: RecordedEvent, b: RecordedEvent): number =>
  a.globalPosition < b.globalPosition ? -1 : a.globalPosition > b.globalPosition ? 1 : 0

/** First index whose element is not less than `probe` (array sorted by `order`). */
const lowerBound = <A>(array: ReadonlyArray<A>, probe: A, order: (a: A, b: A) => number): number => {
  let lo = 0
  let hi = array.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (order(array[mid]!, probe) < 0) lo = mid + 1
    else hi = mid
  }
  return lo
}

const insertSorted = <A>(array: Array<A>, item: A, order: (a: A, b: A) => number): void => {
  let i = array.length
  while (i > 0 && order(array[i - 1]!, item) > 0) i--
  array.splice(i, 0, item)
}

/**
 * The shared state of an in-memory store, for the other in-memory services
 * (subscriptions, leases, sagas) and for tests that must write raw rows.
 *
 * @since 0.1.0
 * @category models
 */
export interface Driver {
  readonly streams: Map<string, StreamState>
  /** Committed events by global position. */
  readonly log: Array<RecordedEvent>
  /** Committed events by `(transactionId, globalPosition)`. */
  readonly byCursor: Array<RecordedEvent>
  readonly snapshots: Map<string, StoredSnapshot>
  /** Open transactions that have an id, with the time they got it. */
  readonly inflight: Map<bigint, number>
  /** Subscription rows: checkpoint and lease. */
  readonly subscriptions: Map<string, SubscriptionRow>
  /** The oldest transaction id still open (or the next to assign): the xmin horizon. */
  readonly xmin: () => bigint
  /** The ambient transaction, if any. */
  readonly currentTransaction: FiberRef.FiberRef<Option.Option<Transaction>>
  /** Runs `effect` in a transaction (joining the ambient one). */
  readonly transaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Locks a key until the ambient transaction ends (a row lock). */
  readonly lock: (key: string) => Effect.Effect<void>
  /** Locks a key unless another transaction holds it (`SKIP LOCKED`); `false` when held. */
  readonly tryLock: (key: string) => Effect.Effect<boolean>
  /** Runs `f` when the ambient transaction commits (at once outside one): for in-memory read models. */
  readonly onCommit: (f: () => void) => Effect.Effect<void>
  /** Committed appends, for subscriptions' wake-ups. */
  readonly commits: PubSub.PubSub<ReadonlyArray<string>>
  /** Writes a stored event as-is (tests: legacy or corrupt rows). */
  readonly unsafeInsert: (event: Omit<RecordedEvent, "globalPosition" | "transactionId" | "recordedAt" | "aggregateId">) => Effect.Effect<RecordedEvent>
  /** Replaces a stored event's data (tests: a row that no longer decodes). */
  readonly unsafeUpdate: (streamId: string, streamVersion: number, patch: Partial<Pick<RecordedEvent, "data" | "eventType" | "schemaVersion">>) => Effect.Effect<void>
  /** Deletes a stored event (tests: a gap in versions). */
  readonly unsafeDelete: (streamId: string, streamVersion: number) => Effect.Effect<void>
  /** Replaces a stored snapshot (tests: a stale or lying snapshot). */
  readonly unsafeWriteSnapshot: (snapshot: StoredSnapshot) => Effect.Effect<void>
  /**
   * The in-memory dead-letter stores over this log, each as the lowest stream version of a
   * stream's dead letters (`null`: none): truncation never cuts past it, as Postgres reads
   * `es_dead_letters`. A dead-letter store registers itself here when it is built.
   */
  readonly deadLetterFloors: Array<(streamId: string) => number | null>
}

/**
 * The tag of the in-memory store's state (exported as `InMemory.Driver`).
 *
 * @since 0.1.0
 * @category tags
 */
export const Driver: Context.Tag<Driver, Driver> = Context.GenericTag<Driver>("@mire/core/InMemory/Driver")

const makeState = Effect.gen(function* () {
  const streams = new Map<string, StreamState>()
  const log: Array<RecordedEvent> = []
  const byCursor: Array<RecordedEvent> = []
  const snapshots = new Map<string, StoredSnapshot>()
  const deadLetterFloors: Array<(streamId: string) => number | null> = []
  const inflight = new Map<bigint, number>()
  const subscriptions = new Map<string, SubscriptionRow>()
  const eventIds = new Set<string>()
  const locks = new Map<string, { owner: number; waiters: Array<Deferred.Deferred<void>> }>()
  const commits = yield* PubSub.sliding<ReadonlyArray<string>>(1024)
  const currentTransaction = FiberRef.unsafeMake<Option.Option<Transaction>>(Option.none())
  let nextXid = 3n
  let nextPosition = 1n
  let nextTxId = 1

  const xmin = (): bigint => {
    let min = nextXid
    for (const xid of inflight.keys()) if (xid < min) min = xid
    return min
  }

  /** `now`: when the transaction gets its id, from `Clock` (so `TestClock` ages open transactions). */
  const assignXid = (tx: Transaction, now: number): bigint => {
    if (tx.xid === undefined) {
      tx.xid = nextXid++
      inflight.set(tx.xid, now)
    }
    return tx.xid
  }

  const release = (tx: Transaction): Effect.Effect<void> =>
    Effect.forEach(
      tx.locks,
      (streamId) => {
        const lock = locks.get(streamId)
        if (lock === undefined || lock.owner !== tx.id) return Effect.void
        locks.delete(streamId)
        return Effect.forEach(lock.waiters, (waiter) => Deferred.succeed(waiter, undefined), { discard: true })
      },
      { discard: true }
    )

  const lock = (tx: Transaction, streamId: string): Effect.Effect<void> =>
    Effect.suspend(() => {
      const held = locks.get(streamId)
      if (held === undefined) {
        locks.set(streamId, { owner: tx.id, waiters: [] })
        tx.locks.add(streamId)
        return Effect.void
      }
      if (held.owner === tx.id) return Effect.void
      return Effect.flatMap(Deferred.make<void>(), (waiter) => {
        held.waiters.push(waiter)
        return Effect.zipRight(Deferred.await(waiter), lock(tx, streamId))
      })
    })

  const commit = (tx: Transaction): Effect.Effect<void> =>
    Effect.suspend(() => {
      const categories = new Set<string>()
      for (const [streamId, staged] of tx.staged) {
        const committed = streams.get(streamId)
        if (committed === undefined) streams.set(streamId, staged)
        else {
          committed.version = staged.version
          committed.events = staged.events
          committed.archived = staged.archived
          committed.deleted = staged.deleted
          committed.truncatedBefore = staged.truncatedBefore
        }
      }
      for (const event of tx.written) {
        eventIds.add(event.eventId)
        insertSorted(log, event, positionOrder)
        insertSorted(byCursor, event, Cursor.eventOrder)
        categories.add(event.category)
      }
      for (const [streamId, snapshot] of tx.stagedSnapshots) snapshots.set(streamId, snapshot)
      if (tx.xid !== undefined) inflight.delete(tx.xid)
      for (const f of tx.onCommit) f()
      return Effect.zipRight(
        release(tx),
        categories.size > 0 ? PubSub.publish(commits, [...categories]) : Effect.void
      )
    })

  const rollback = (tx: Transaction): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (tx.xid !== undefined) inflight.delete(tx.xid)
      return release(tx)
    })

  const transaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.flatMap(FiberRef.get(currentTransaction), (ambient) => {
      if (Option.isSome(ambient)) {
        // A nested transaction is a savepoint: its writes are undone if it fails.
        const tx = ambient.value
        const saved = new Map([...tx.staged].map(([k, v]) => [k, { ...v, events: [...v.events] }]))
        const savedSnapshots = new Map(tx.stagedSnapshots)
        const written = tx.written.length
        const callbacks = tx.onCommit.length
        return Effect.onExit(effect, (exit) =>
          Exit.isSuccess(exit)
            ? Effect.void
            : Effect.sync(() => {
                tx.staged = saved
                tx.stagedSnapshots = savedSnapshots
                tx.written.length = written
                tx.onCommit.length = callbacks
              })
        )
      }
      return Effect.uninterruptibleMask((restore) => {
        const tx: Transaction = {
          id: nextTxId++,
          xid: undefined,
          staged: new Map(),
          stagedSnapshots: new Map(),
          written: [],
          locks: new Set(),
          onCommit: []
        }
        return Effect.locally(restore(effect), currentTransaction, Option.some(tx)).pipe(
          Effect.exit,
          Effect.flatMap((exit) => Effect.zipRight(Exit.isSuccess(exit) ? commit(tx) : rollback(tx), exit))
        )
      })
    })

  const inTransaction = <A, E, R>(f: (tx: Transaction) => Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    transaction(
      Effect.flatMap(FiberRef.get(currentTransaction), (tx) => f(Option.getOrThrow(tx)))
    )

  const visible = (tx: Option.Option<Transaction>, streamId: string): StreamState | undefined =>
    (Option.isSome(tx) ? tx.value.staged.get(streamId) : undefined) ?? streams.get(streamId)

  /** The first event id of `requests` already stored (committed, or written by `tx`). */
  const storedId = (tx: Transaction, requests: ReadonlyArray<EventStore.StorableAppend>): string | undefined => {
    const own = tx.written.length > 0 ? new Set(tx.written.map((e) => e.eventId)) : undefined
    for (const request of requests) {
      for (const event of request.events) {
        if (eventIds.has(event.eventId) || own?.has(event.eventId)) return event.eventId
      }
    }
    return undefined
  }

  const append = (
    requests: ReadonlyArray<EventStore.StorableAppend>
  ): Effect.Effect<ReadonlyArray<CommittedEvents>, EventStore.AppendError> =>
    inTransaction((tx) =>
      Effect.zipRight(
        Effect.forEach(requests, (request) => lock(tx, request.streamId), { discard: true }),
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.suspend((): Effect.Effect<ReadonlyArray<CommittedEvents>, EventStore.AppendError> => {
            // As Postgres: a stream whose expectation fails writes nothing (so its event ids are
            // not checked); an id already stored among the others fails the whole append. An
            // archived or deleted stream fails as such, whatever its expectation.
            let conflict: ConcurrencyConflict | StreamArchived | StreamDeleted | undefined
            const passing: Array<EventStore.StorableAppend> = []
            for (const request of requests) {
              const stream = visible(Option.some(tx), request.streamId)
              const current = stream?.version ?? 0
              if (stream?.deleted === true || stream?.archived === true) {
                conflict ??=
                  stream.deleted === true
                    ? new StreamDeleted({ streamId: request.streamId, tombstoneVersion: current })
                    : new StreamArchived({ streamId: request.streamId })
              } else if (ExpectedVersion.matches(request.expected, current)) passing.push(request)
              else if (conflict === undefined) {
                conflict = new ConcurrencyConflict({
                  streamId: request.streamId,
                  expected: ExpectedVersion.format(request.expected),
                  actual: current === 0 ? null : current
                })
              }
            }
            const duplicate = storedId(tx, passing)
            if (duplicate !== undefined) return Effect.fail(EventStore.duplicateEventId(requests, duplicate))
            if (conflict !== undefined) return Effect.fail(conflict)
            const xid = assignXid(tx, now)
            const recordedAt = new Date(now)
            const committed = requests.map((request): CommittedEvents => {
              const base = visible(Option.some(tx), request.streamId)
              const staged: StreamState = {
                category: base?.category ?? request.category,
                version: base?.version ?? 0,
                events: [...(base?.events ?? [])],
                truncatedBefore: base?.truncatedBefore
              }
              const firstVersion = staged.version + 1
              const firstPosition = nextPosition
              const aggregateId = aggregateIdOf(request.streamId, request.category)
              for (const event of request.events) {
                staged.version++
                const recorded: RecordedEvent = {
                  eventId: event.eventId,
                  streamId: request.streamId,
                  category: request.category,
                  aggregateId,
                  streamVersion: staged.version,
                  globalPosition: nextPosition++,
                  transactionId: xid,
                  eventType: event.eventType,
                  schemaVersion: event.schemaVersion,
                  data: parseObject(event.dataJson),
                  metadata: parseMetadata(event.metadataJson),
                  recordedAt
                }
                staged.events.push(recorded)
                tx.written.push(recorded)
              }
              tx.staged.set(request.streamId, staged)
              return {
                streamId: request.streamId,
                firstVersion,
                lastVersion: staged.version,
                firstPosition,
                lastPosition: nextPosition - 1n,
                transactionId: xid
              }
            })
            return Effect.succeed(committed)
          })
        )
      )
    )

  const readStreamPage = (streamId: string, from: number, direction: EventStore.Direction, limit: number) =>
    Effect.map(FiberRef.get(currentTransaction), (tx) => {
      const events = visible(tx, streamId)?.events ?? []
      const probe = { streamVersion: from } as RecordedEvent
      const byVersion = (a: RecordedEvent, b: RecordedEvent) => a.streamVersion - b.streamVersion
      if (direction === "forward") {
        const start = lowerBound(events, probe, byVersion)
        return events.slice(start, start + limit)
      }
      const end = lowerBound(events, { streamVersion: from + 1 } as RecordedEvent, byVersion)
      return events.slice(Math.max(0, end - limit), end).reverse()
    })

  /** The stream's events from version `from` forward (up to `limit`), and its version, as one read sees them. */
  const pageOf = (tx: Option.Option<Transaction>, streamId: string, from: number, limit: number): EventStore.LoadPage => {
    const stream = visible(tx, streamId)
    const events = stream?.events ?? []
    const start = lowerBound(events, { streamVersion: from } as RecordedEvent, (a, b) => a.streamVersion - b.streamVersion)
    const page = events.slice(start, start + limit)
    const state = stream?.deleted === true ? "deleted" : stream?.archived === true ? "archived" : undefined
    return { version: page.length === 0 ? 0 : (stream?.version ?? 0), events: page, state: page.length === 0 ? undefined : state }
  }

  const loadPage = (streamId: string, from: number, limit: number) =>
    Effect.map(FiberRef.get(currentTransaction), (tx) => pageOf(tx, streamId, from, limit))

  const loadSnapshotPage = (streamId: string, limit: number) =>
    Effect.map(FiberRef.get(currentTransaction), (tx): EventStore.SnapshotLoadPage => {
      const snapshot = Option.fromNullable(
        (Option.isSome(tx) ? tx.value.stagedSnapshots.get(streamId) : undefined) ?? snapshots.get(streamId)
      )
      const from = Option.isSome(snapshot) ? snapshot.value.streamVersion : 1
      return { ...pageOf(tx, streamId, from, limit), snapshot }
    })

  const readLogPage = (
    categories: ReadonlyArray<string> | undefined,
    from: bigint,
    direction: EventStore.Direction,
    limit: number,
    excludeArchived = false
  ) =>
    Effect.map(FiberRef.get(currentTransaction), (tx) => {
      let source: ReadonlyArray<RecordedEvent> = log
      if (Option.isSome(tx) && tx.value.written.length > 0) {
        source = [...log, ...tx.value.written].sort(positionOrder)
      }
      const wanted = categories === undefined ? undefined : new Set(categories)
      const archived = (e: RecordedEvent) => excludeArchived && visible(tx, e.streamId)?.archived === true
      const out: Array<RecordedEvent> = []
      const probe = { globalPosition: from } as RecordedEvent
      if (direction === "forward") {
        for (let i = lowerBound(source, probe, positionOrder); i < source.length && out.length < limit; i++) {
          const e = source[i]!
          if ((wanted === undefined || wanted.has(e.category)) && !archived(e)) out.push(e)
        }
      } else {
        const end = lowerBound(source, { globalPosition: from + 1n } as RecordedEvent, positionOrder)
        for (let i = end - 1; i >= 0 && out.length < limit; i--) {
          const e = source[i]!
          if ((wanted === undefined || wanted.has(e.category)) && !archived(e)) out.push(e)
        }
      }
      return out
    })

  const driver: Driver = {
    streams,
    log,
    byCursor,
    snapshots,
    inflight,
    subscriptions,
    xmin,
    currentTransaction,
    transaction,
    lock: (key) => inTransaction((tx) => lock(tx, key)),
    tryLock: (key) =>
      inTransaction((tx) =>
        Effect.sync(() => {
          const held = locks.get(key)
          if (held !== undefined) return held.owner === tx.id
          locks.set(key, { owner: tx.id, waiters: [] })
          tx.locks.add(key)
          return true
        })
      ),
    onCommit: (f) =>
      Effect.flatMap(FiberRef.get(currentTransaction), (tx) =>
        Effect.sync(() => (Option.isSome(tx) ? void tx.value.onCommit.push(f) : f()))
      ),
    commits,
    unsafeInsert: (event) =>
      inTransaction((tx) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          const xid = assignXid(tx, now)
          const base = visible(Option.some(tx), event.streamId)
          const recorded: RecordedEvent = {
            ...event,
            aggregateId: aggregateIdOf(event.streamId, event.category),
            globalPosition: nextPosition++,
            transactionId: xid,
            recordedAt: new Date(now)
          }
          const events = [...(base?.events ?? []), recorded].sort((a, b) => a.streamVersion - b.streamVersion)
          tx.written.push(recorded)
          tx.staged.set(event.streamId, {
            ...base,
            category: event.category,
            version: Math.max(base?.version ?? 0, event.streamVersion),
            events
          })
          return recorded
        })
      ),
    unsafeUpdate: (streamId, streamVersion, patch) =>
      Effect.sync(() => {
        const replace = (array: Array<RecordedEvent>) => {
          const i = array.findIndex((e) => e.streamId === streamId && e.streamVersion === streamVersion)
          if (i >= 0) array[i] = { ...array[i]!, ...patch }
        }
        const stream = streams.get(streamId)
        if (stream !== undefined) replace(stream.events)
        replace(log)
        replace(byCursor)
      }),
    unsafeDelete: (streamId, streamVersion) =>
      Effect.sync(() => {
        const remove = (array: Array<RecordedEvent>) => {
          const i = array.findIndex((e) => e.streamId === streamId && e.streamVersion === streamVersion)
          if (i >= 0) array.splice(i, 1)
        }
        const stream = streams.get(streamId)
        const removed = stream?.events.find((e) => e.streamVersion === streamVersion)
        if (removed !== undefined) eventIds.delete(removed.eventId)
        if (stream !== undefined) remove(stream.events)
        remove(log)
        remove(byCursor)
      }),
    unsafeWriteSnapshot: (snapshot) => Effect.sync(() => void snapshots.set(snapshot.streamId, snapshot)),
    deadLetterFloors
  }

  const setArchived = (streamId: StreamId.StreamId, archived: boolean) =>
    inTransaction((tx) =>
      Effect.zipRight(
        lock(tx, streamId),
        Effect.suspend((): Effect.Effect<void, StreamNotFound | StreamDeleted> => {
          const stream = visible(Option.some(tx), streamId)
          if (stream === undefined) return Effect.fail(new StreamNotFound({ streamId }))
          if (stream.deleted === true) return Effect.fail(new StreamDeleted({ streamId, tombstoneVersion: stream.version }))
          if ((stream.archived === true) !== archived) tx.staged.set(streamId, { ...stream, archived })
          return Effect.void
        })
      )
    )

  /** As Postgres: under the stream's lock, its rows go and its tombstone is appended, all in one transaction. */
  const deleteStream = (streamId: StreamId.StreamId, tombstone: EventStore.StorableEvent) =>
    inTransaction((tx) =>
      Effect.zipRight(
        lock(tx, streamId),
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.suspend(() => {
            const stream = visible(Option.some(tx), streamId)
            if (stream === undefined) return Effect.fail(new StreamNotFound({ streamId }))
            if (stream.deleted === true) return Effect.succeed(stream.version)
            const version = stream.version + 1
            const data = { deletedVersion: stream.version }
            const recorded: RecordedEvent = {
              eventId: tombstone.eventId,
              streamId,
              category: StreamId.categoryFromStored(stream.category),
              aggregateId: aggregateIdOf(streamId, stream.category),
              streamVersion: version,
              globalPosition: nextPosition++,
              transactionId: assignXid(tx, now),
              eventType: tombstone.eventType,
              schemaVersion: tombstone.schemaVersion,
              data: parseObject(JSON.stringify(data)),
              metadata: parseMetadata(tombstone.metadataJson),
              recordedAt: new Date(now)
            }
            tx.written.push(recorded)
            tx.staged.set(streamId, {
              category: stream.category,
              version,
              events: [recorded],
              archived: false,
              deleted: true,
              truncatedBefore: version
            })
            tx.stagedSnapshots.delete(streamId)
            tx.onCommit.push(() => {
              const gone = (e: RecordedEvent) => e.streamId === streamId && e.streamVersion < version
              for (const array of [log, byCursor]) {
                let kept = 0
                for (const e of array) {
                  if (gone(e)) eventIds.delete(e.eventId)
                  else array[kept++] = e
                }
                array.length = kept
              }
              snapshots.delete(streamId)
            })
            return Effect.succeed(version)
          })
        )
      )
    )

  /** A stream's extent as Postgres reads it (with `lock`: under its row lock, as `FOR UPDATE`). */
  const streamExtent = (streamId: string, options: { readonly lock: boolean; readonly cutoff?: Date | undefined }) =>
    Effect.flatMap(
      options.lock ? inTransaction((tx) => lock(tx, streamId)) : Effect.void,
      () =>
        Effect.map(FiberRef.get(currentTransaction), (tx): Option.Option<Retention.Extent> => {
          const stream = visible(tx, streamId)
          if (stream === undefined) return Option.none()
          const snapshot =
            (Option.isSome(tx) ? tx.value.stagedSnapshots.get(streamId) : undefined) ?? snapshots.get(streamId)
          const cutoff = options.cutoff?.getTime()
          const young = cutoff === undefined ? undefined : stream.events.find((e) => e.recordedAt.getTime() >= cutoff)
          let deadLetterFrom: number | null = null
          for (const floor of deadLetterFloors) {
            const low = floor(streamId)
            if (low !== null && (deadLetterFrom === null || low < deadLetterFrom)) deadLetterFrom = low
          }
          return Option.some({
            version: stream.version,
            truncatedBefore: stream.truncatedBefore ?? 1,
            snapshotVersion: snapshot?.streamVersion ?? null,
            snapshotSchemaVersion: snapshot?.snapshotVersion ?? null,
            deadLetterFrom,
            deleted: stream.deleted === true,
            youngFrom: young?.streamVersion ?? null
          })
        })
    )

  /** As Postgres: in the ambient transaction, the stream's events below `before` go and `before` is its first kept version. */
  const removeBefore = (streamId: string, before: number) =>
    inTransaction((tx) =>
      Effect.zipRight(
        lock(tx, streamId),
        Effect.sync(() => {
          const stream = visible(Option.some(tx), streamId)
          if (stream === undefined) return 0
          const kept = stream.events.filter((e) => e.streamVersion >= before)
          const removed = stream.events.length - kept.length
          tx.staged.set(streamId, {
            ...stream,
            events: kept,
            truncatedBefore: Math.max(stream.truncatedBefore ?? 1, before)
          })
          tx.onCommit.push(() => {
            const gone = (e: RecordedEvent) => e.streamId === streamId && e.streamVersion < before
            for (const array of [log, byCursor]) {
              let at = 0
              for (const e of array) {
                if (gone(e)) eventIds.delete(e.eventId)
                else array[at++] = e
              }
              array.length = at
            }
          })
          return removed
        })
      )
    )

  /** A category's stream ids in id order after `after`, deleted streams left out (committed, and this transaction's). */
  const streamIdsPage = (category: string, after: string | undefined, limit: number) =>
    Effect.map(FiberRef.get(currentTransaction), (tx) => {
      const ids = new Set<string>(streams.keys())
      if (Option.isSome(tx)) for (const id of tx.value.staged.keys()) ids.add(id)
      const out: Array<StreamId.StreamId> = []
      for (const id of [...ids].sort()) {
        if (after !== undefined && id <= after) continue
        const stream = visible(tx, id)
        if (stream === undefined || stream.category !== category || stream.deleted === true) continue
        out.push(StreamId.fromStored(id))
        if (out.length >= limit) break
      }
      return out
    })

  const storage: EventStore.Storage = {
    append,
    streamExtent,
    removeBefore,
    streamIdsPage,
    setArchived,
    deleteStream,
    readStreamPage,
    readLogPage,
    loadPage,
    loadSnapshotPage,
    streamVersion: (streamId) => Effect.map(FiberRef.get(currentTransaction), (tx) => visible(tx, streamId)?.version ?? 0),
    lockStream: (streamId) =>
      inTransaction((tx) => {
        const version = visible(Option.some(tx), streamId)?.version ?? 0
        return version === 0 ? Effect.succeed(0) : Effect.as(lock(tx, streamId), version)
      }),
    transaction,
    inTransaction: Effect.map(FiberRef.get(currentTransaction), Option.isSome),
    currentTransactionId: inTransaction((tx) => Effect.map(Clock.currentTimeMillis, (now) => assignXid(tx, now))),
    readSnapshot: (streamId) =>
      Effect.map(FiberRef.get(currentTransaction), (tx) =>
        Option.fromNullable(
          (Option.isSome(tx) ? tx.value.stagedSnapshots.get(streamId) : undefined) ?? snapshots.get(streamId)
        )
      ),
    writeSnapshot: ({ stateJson, ...stored }) =>
      inTransaction((tx) =>
        Effect.sync(() => {
          const state = Json.parseAsJsonb(stateJson)
          const snapshot: StoredSnapshot = { ...stored, state }
          const existing = tx.stagedSnapshots.get(snapshot.streamId) ?? snapshots.get(snapshot.streamId)
          // As Postgres: never below the stream's base (its first kept version), whose anchor is gone.
          const base = visible(Option.some(tx), snapshot.streamId)?.truncatedBefore ?? 1
          if (
            snapshot.streamVersion >= base &&
            (existing === undefined ||
              existing.snapshotVersion !== snapshot.snapshotVersion ||
              existing.streamVersion < snapshot.streamVersion)
          ) {
            tx.stagedSnapshots.set(snapshot.streamId, snapshot)
          }
        })
      )
  }
  return { driver, storage }
})

/**
 * A fresh in-memory store's `Storage` primitives and its driver (tests wrap
 * the primitives, e.g. to interleave a truncation between two pages of a load).
 *
 * @since 0.2.0
 * @category constructors
 */
export const makeStorage: Effect.Effect<{ readonly driver: Driver; readonly storage: EventStore.Storage }> = makeState

/**
 * Builds an in-memory `EventStore` and its driver, with the given limits
 * (`EventStore.defaults` where not given).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Partial<EventStore.Options>
): Effect.Effect<{ readonly eventStore: EventStore.EventStore; readonly driver: Driver }> =>
  Effect.map(makeState, ({ driver, storage }) => ({ eventStore: EventStore.make(storage, options), driver }))
