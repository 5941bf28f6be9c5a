/**
 * The per-stream ordering contract, as a pure step over a polled page.
 *
 * A subscription reads the log in cursor order behind the xmin horizon. A
 * stream's v2 can sort before its v1 (v2's transaction took its id first),
 * so cursor order alone may present v2 before v1 is deliverable. This step
 * delivers each stream's events in strictly increasing version with no gaps:
 * an event whose predecessor has not been delivered is held, and released
 * the moment its predecessor is; unrelated streams keep flowing.
 *
 * The backstop: an event at or below the version already delivered for its
 * stream is an {@link OrderingViolation}; nothing of that page is delivered.
 *
 * After a restart, the versions its checkpoint records as delivered past
 * its cursor are skipped when read again. Such a stream's highest version
 * can sort before a lower one still to be read again (v5 at xid 12, v4 at
 * xid 15): it is never forgotten, and every checkpoint records it, until
 * all its skipped versions are known to be read again, that is once it
 * delivers its next version (which sorts after every version delivered
 * before the restart) or once the subscription is caught up
 * ({@link caughtUp}); from then on, it is remembered like any other stream.
 *
 * Versions recorded past a checkpoint may also lie above the xmin horizon
 * (a start at the head records every version committed above it; a reset
 * inside an inverted pair records versions up to its cursor): a poll that
 * finds nothing proves nothing about them then. Resumed with `upTo` (a
 * cursor at or after every such version), the skipped versions are kept
 * until the read cursor reaches it, or until a poll finds nothing after a
 * commit-safe head at or past it was read ({@link observeHead}); a stream's
 * next version does not release them early (it may sort before a skipped
 * one: v2 of a transaction that took its id before the start, v1 committed
 * just before it by a younger one).
 *
 * Cost and memory: a step works on the streams of its page only (an
 * overlay, then applied in place: O(page)), never copying whole maps; a
 * checkpoint walks only the streams delivered or skipped past its cursor.
 * A stream whose last event is at or below the safe cursor, with nothing
 * held or skipped, is forgotten once more than `retain` such streams are
 * remembered (oldest first): if it appears again, its delivered version is
 * looked up in the log ({@link unknownStreams}), exactly as for a stream
 * first seen after a restart. Memory is O(held + streams delivered past the
 * safe cursor + streams skipped since the restart + retain), whatever the
 * number of streams ever seen.
 *
 * Both stores' subscriptions run these functions.
 *
 * @since 0.1.0
 */
import type { Checkpoint } from "./Checkpoint.js"
import * as Cursor from "./Cursor.js"
import { OrderingViolation } from "./EventStoreError.js"
import type { RecordedEvent } from "./RecordedEvent.js"

/** A cursor as one bigint, ordered as the cursor. */
const keyOf = (cursor: Cursor.Cursor): bigint => (cursor.transactionId << 64n) | cursor.position

const compare = Cursor.order

/**
 * A FIFO over an array with a moving head (amortized O(1) push and shift,
 * no holes to walk: a JS `Map` iterated from the front after many deletes
 * walks its deleted slots).
 *
 * @since 0.1.0
 * @category models
 */
export interface Queue<A> {
  items: Array<A>
  head: number
}

const queue = <A>(): Queue<A> => ({ items: [], head: 0 })

const peek = <A>(q: Queue<A>): A | undefined => q.items[q.head]

const shift = <A>(q: Queue<A>): void => {
  q.head++
  if (q.head >= 1024 && q.head * 2 >= q.items.length) {
    q.items = q.items.slice(q.head)
    q.head = 0
  }
}

/**
 * Where a stream's last seen event stands: past the safe cursor (`recent`),
 * at or below it (`retained`), at or below it but kept beyond `retain`
 * while the stream is skipped after a restart (`pinned`), or superseded by
 * a later one (`stale`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Seen {
  readonly streamId: string
  readonly cursor: Cursor.Cursor
  place: "recent" | "retained" | "pinned" | "stale"
}

/**
 * A held event's place in cursor order.
 *
 * @since 0.1.0
 * @category models
 */
export interface HeldMark {
  readonly cursor: Cursor.Cursor
  released: boolean
}

/**
 * The storage of a {@link State}: mutable, owned by the state chain that
 * {@link step} and {@link commit} advance. Not for direct use.
 *
 * @since 0.1.0
 * @category models
 */
export interface Storage {
  /** Highest version delivered per remembered stream. */
  readonly delivered: Map<string, number>
  /** Held events per stream, ascending by version. */
  readonly held: Map<string, ReadonlyArray<RecordedEvent>>
  /** Held events by cursor key. */
  readonly heldMarks: Map<bigint, HeldMark>
  /** Held events in cursor order (released ones dropped lazily): the first bounds the safe cursor. */
  readonly heldOrder: Queue<HeldMark>
  /**
   * Versions delivered before a restart, past its checkpoint: skipped when
   * read again. A stream stays here (never forgotten, recorded by every
   * checkpoint) until its skipped versions are all known to be read again.
   */
  readonly skip: Map<string, number>
  /** The last event delivered or skipped per stream. */
  readonly lastSeen: Map<string, Seen>
  /** Last seen events past the safe cursor, in cursor order (stale ones dropped lazily). */
  readonly recent: Queue<Seen>
  /** Last seen events at or below the safe cursor, in cursor order: the oldest are forgotten beyond `retain`. */
  readonly retained: Queue<Seen>
  /** How many `retained` entries are not stale. */
  retainedCount: number
  /**
   * A cursor at or after every skipped version (see {@link resume}): they
   * are all read again once the read cursor reaches it. Unset: they lie
   * below the xmin horizon, and are read again by the first poll that finds
   * nothing.
   */
  skipUpTo: Cursor.Cursor | undefined
  /** A commit-safe head read after a poll found nothing while `skipUpTo` was pending (see {@link observeHead}). */
  headSeen: Cursor.Cursor | undefined
}

/**
 * What a subscription remembers between polls. A state is used once: the
 * state a step returns shares (and has updated) its storage.
 *
 * @since 0.1.0
 * @category models
 */
export interface State {
  readonly storage: Storage
  /** How many streams at or below the safe cursor are remembered before the oldest are forgotten. */
  readonly retain: number
}

/**
 * The default of `retain`: streams behind the safe cursor remembered to spare
 * a baseline lookup when they appear again.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaultRetain = 4096

/**
 * A state remembering nothing.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: { readonly retain?: number | undefined } = {}): State => ({
  storage: {
    delivered: new Map(),
    held: new Map(),
    heldMarks: new Map(),
    heldOrder: queue(),
    skip: new Map(),
    lastSeen: new Map(),
    recent: queue(),
    retained: queue(),
    retainedCount: 0,
    skipUpTo: undefined,
    headSeen: undefined
  },
  retain: Math.max(0, options.retain ?? defaultRetain)
})

/**
 * The state of a subscription resuming from a checkpoint that records
 * versions delivered past its cursor. `upTo` is a cursor at or after every
 * one of those versions (for instance the log's last cursor once the
 * checkpoint is read): they are then skipped until the read cursor reaches
 * it, even if they lie above the xmin horizon (see the module doc). Without
 * it, they must all lie below the horizon (a checkpoint of delivered
 * events): the first poll that finds nothing releases them.
 *
 * @since 0.1.0
 * @category constructors
 */
export const resume = (
  delivered: ReadonlyMap<string, number>,
  options: { readonly retain?: number | undefined; readonly upTo?: Cursor.Cursor | undefined } = {}
): State => {
  const state = make(options)
  for (const [streamId, version] of delivered) {
    state.storage.delivered.set(streamId, version)
    state.storage.skip.set(streamId, version)
  }
  if (delivered.size > 0) state.storage.skipUpTo = options.upTo
  return state
}

/**
 * A held stream: the version it waits for and the lowest version held.
 *
 * @since 0.1.0
 * @category models
 */
export interface Waiting {
  readonly streamId: string
  readonly missing: number
  readonly seen: number
}

/**
 * A stream's state once a plan is applied.
 *
 * @since 0.1.0
 * @category models
 */
export interface Change {
  delivered: number
  held: Array<RecordedEvent>
  lastSeen: Cursor.Cursor | undefined
}

/**
 * What a page makes deliverable, decided but not yet applied to the state.
 *
 * @since 0.1.0
 * @category models
 */
export interface Plan {
  /** Deliverable events, in delivery order. */
  readonly deliver: ReadonlyArray<RecordedEvent>
  /** The cursor of the page's last event. */
  readonly read: Cursor.Cursor
  readonly changes: ReadonlyMap<string, Change>
  readonly added: ReadonlyArray<RecordedEvent>
  readonly released: ReadonlyArray<RecordedEvent>
}

/**
 * The outcome of one step.
 *
 * @since 0.1.0
 * @category models
 */
export interface Step {
  readonly state: State
  /** Deliverable events, in delivery order. */
  readonly deliver: ReadonlyArray<RecordedEvent>
}

/**
 * Streams of a page that the state does not remember: their baseline (the
 * highest version at or below the read cursor before the page, that is the
 * version delivered, or before the subscription started) must be looked up
 * before {@link step}. When the subscription started at the beginning of the
 * log (`fromStart`), a stream whose version 1 is in the page needs no lookup:
 * nothing of it can have been delivered. After a restart it still does: a
 * checkpoint written by older code may lie between a stream's v2 and its
 * later-sorting v1, and only the lookup (v2 at or below the cursor) makes
 * that an {@link OrderingViolation} instead of a silently lost v2.
 *
 * @since 0.1.0
 * @category decisions
 */
export const unknownStreams = (
  state: State,
  page: ReadonlyArray<RecordedEvent>,
  fromStart = false
): ReadonlyArray<string> => {
  const unknown = new Set<string>()
  const first = new Set<string>()
  for (const event of page) {
    if (state.storage.delivered.has(event.streamId)) continue
    if (fromStart && event.streamVersion === 1) first.add(event.streamId)
    else unknown.add(event.streamId)
  }
  for (const streamId of first) unknown.delete(streamId)
  return [...unknown]
}

/**
 * Decides what a page makes deliverable, without changing the state: O(page
 * + what the page's streams hold). `baseline` gives, for streams the state
 * does not remember, the version already delivered (0 if none).
 *
 * `floors` gives, for streams whose first versions were removed by design
 * (a deleted or truncated stream: see `SubscriptionStore.missing`), the
 * first version kept. Such a stream counts as delivered up to its floor
 * minus one: its held events below the floor are dropped (they were
 * removed), those the floor makes consecutive are released, and a page's
 * events below the floor are dropped, never taken for a regression. Each
 * floored stream is applied before the page, even when the page does not
 * contain it.
 *
 * @since 0.1.0
 * @category decisions
 */
export const plan = (
  state: State,
  page: ReadonlyArray<RecordedEvent>,
  baseline: ReadonlyMap<string, number>,
  subscriptionId: string,
  floors: ReadonlyMap<string, number> = noFloors
): Plan | OrderingViolation => {
  const { delivered, held, skip } = state.storage
  const changes = new Map<string, Change>()
  const added: Array<RecordedEvent> = []
  const released: Array<RecordedEvent> = []
  const deliver: Array<RecordedEvent> = []
  const change = (streamId: string): Change => {
    let c = changes.get(streamId)
    if (c === undefined) {
      c = {
        delivered: delivered.get(streamId) ?? baseline.get(streamId) ?? 0,
        held: [...(held.get(streamId) ?? [])],
        lastSeen: undefined
      }
      changes.set(streamId, c)
      const floor = floors.get(streamId)
      if (floor !== undefined && c.delivered < floor - 1) lower(c, floor - 1, deliver, released)
    }
    return c
  }
  for (const streamId of floors.keys()) change(streamId)
  for (const event of page) {
    const c = change(event.streamId)
    const floor = floors.get(event.streamId)
    if (floor !== undefined && event.streamVersion < floor) {
      // Removed since this page was read (deleted or truncated): never delivered.
      c.lastSeen = Cursor.of(event)
      continue
    }
    const skipped = skip.get(event.streamId)
    if (skipped !== undefined && event.streamVersion <= skipped) {
      // Delivered before the restart (its checkpoint recorded it): at-least-once needs no second delivery.
      c.lastSeen = Cursor.of(event)
      continue
    }
    const last = c.delivered
    if (event.streamVersion <= last) {
      return new OrderingViolation({
        subscriptionId,
        streamId: event.streamId,
        version: event.streamVersion,
        lastDelivered: last
      })
    }
    if (event.streamVersion === last + 1) {
      deliver.push(event)
      let version = event.streamVersion
      let i = 0
      while (i < c.held.length && c.held[i]!.streamVersion === version + 1) {
        deliver.push(c.held[i]!)
        released.push(c.held[i]!)
        version++
        i++
      }
      if (i > 0) c.held.splice(0, i)
      // The releasing event sorts after every event it releases: it is the stream's last seen.
      c.lastSeen = Cursor.of(event)
      c.delivered = version
    } else {
      let at = c.held.length
      while (at > 0 && c.held[at - 1]!.streamVersion > event.streamVersion) at--
      c.held.splice(at, 0, event)
      added.push(event)
    }
  }
  const read = page.length === 0 ? Cursor.start : Cursor.of(page[page.length - 1]!)
  return { deliver, read, changes, added, released }
}

const noFloors: ReadonlyMap<string, number> = new Map()

/**
 * Moves a stream's delivered version up to `to` (its versions up to it were
 * removed): drops its held events up to `to`, and delivers those that are
 * then consecutive. Its last seen event becomes the latest released one.
 */
const lower = (c: Change, to: number, deliver: Array<RecordedEvent>, released: Array<RecordedEvent>): void => {
  c.delivered = to
  let i = 0
  while (i < c.held.length && c.held[i]!.streamVersion <= to) released.push(c.held[i++]!)
  while (i < c.held.length && c.held[i]!.streamVersion === c.delivered + 1) {
    const event = c.held[i++]!
    deliver.push(event)
    released.push(event)
    c.delivered = event.streamVersion
    const cursor = Cursor.of(event)
    if (c.lastSeen === undefined || compare(cursor, c.lastSeen) > 0) c.lastSeen = cursor
  }
  if (i > 0) c.held.splice(0, i)
}

/**
 * Applies a plan (of this state, for the page read after it) and returns the
 * next state, forgetting what a checkpoint no longer needs. O(page).
 *
 * @since 0.1.0
 * @category decisions
 */
export const commit = (state: State, decided: Plan): State => {
  const storage = state.storage
  const { delivered, held, heldMarks, heldOrder, lastSeen, recent, skip } = storage
  const seen: Array<readonly [string, Cursor.Cursor]> = []
  for (const [streamId, c] of decided.changes) {
    delivered.set(streamId, c.delivered)
    if (c.held.length > 0) held.set(streamId, c.held)
    else held.delete(streamId)
    if (c.lastSeen !== undefined) seen.push([streamId, c.lastSeen])
    // Its next version sorts after every version delivered before the restart: all of them were read again.
    // Not so for versions that may lie above the horizon (`skipUpTo`): they wait for the cursor.
    const skipped = skip.get(streamId)
    if (skipped !== undefined && c.delivered > skipped && storage.skipUpTo === undefined) skip.delete(streamId)
  }
  // Every cursor of this page sorts after every cursor remembered: appending in order keeps the queues sorted.
  for (const event of decided.added) {
    const mark: HeldMark = { cursor: Cursor.of(event), released: false }
    heldMarks.set(keyOf(mark.cursor), mark)
    heldOrder.items.push(mark)
  }
  for (const event of decided.released) {
    const key = keyOf(Cursor.of(event))
    const mark = heldMarks.get(key)
    if (mark !== undefined) mark.released = true
    heldMarks.delete(key)
  }
  while (peek(heldOrder)?.released === true) shift(heldOrder)
  seen.sort((a, b) => compare(a[1], b[1]))
  for (const [streamId, cursor] of seen) {
    const previous = lastSeen.get(streamId)
    if (previous !== undefined) {
      if (previous.place === "retained") storage.retainedCount--
      previous.place = "stale"
    }
    const entry: Seen = { streamId, cursor, place: "recent" }
    lastSeen.set(streamId, entry)
    recent.items.push(entry)
  }
  const next: State = { storage: state.storage, retain: state.retain }
  if (decided.changes.size > 0) {
    // The read cursor reached every skipped version: all of them were read again.
    if (storage.skipUpTo !== undefined && compare(decided.read, storage.skipUpTo) >= 0) release(storage)
    forget(next, safeCursor(next, decided.read))
  }
  return next
}

/**
 * Decides and applies a page: {@link plan} then {@link commit}.
 *
 * @example
 * ```ts
 * import { HoldBack } from "@mire/core"
 *
 * // Nothing read yet: nothing to deliver, nothing held back.
 * const result = HoldBack.step(HoldBack.make(), [], new Map(), "orders-projection")
 * assert.ok("deliver" in result && result.deliver.length === 0)
 * ```
 * @since 0.1.0
 * @category decisions
 */
export const step = (
  state: State,
  page: ReadonlyArray<RecordedEvent>,
  baseline: ReadonlyMap<string, number>,
  subscriptionId: string
): Step | OrderingViolation => {
  const decided = plan(state, page, baseline, subscriptionId)
  if ("_tag" in decided) return decided
  return { state: commit(state, decided), deliver: decided.deliver }
}

/**
 * Moves streams at or below `safe` out of `recent`, and forgets the oldest
 * beyond `retain`, except skipped ones (pinned until {@link commit} or
 * {@link caughtUp} releases them).
 */
const forget = (state: State, safe: Cursor.Cursor): void => {
  const storage = state.storage
  const { delivered, held, skip, lastSeen, recent, retained } = storage
  for (let entry = peek(recent); entry !== undefined; entry = peek(recent)) {
    if (entry.place === "recent") {
      if (compare(entry.cursor, safe) > 0) break
      entry.place = "retained"
      retained.items.push(entry)
      storage.retainedCount++
    }
    shift(recent)
  }
  for (let entry = peek(retained); entry !== undefined && storage.retainedCount > state.retain; entry = peek(retained)) {
    shift(retained)
    if (entry.place !== "retained") continue
    storage.retainedCount--
    if (skip.has(entry.streamId)) {
      // A lower skipped version may still be ahead: forgetting it would take that version for a regression.
      entry.place = "pinned"
      continue
    }
    entry.place = "stale"
    lastSeen.delete(entry.streamId)
    // A stream with held events keeps its delivered version.
    if (!held.has(entry.streamId)) delivered.delete(entry.streamId)
  }
}

/**
 * Records that a poll found nothing after the read cursor: every event read
 * before the restart (all older than the xmin horizon then, hence now) has
 * been read again, so no skipped version is still ahead. Skipped streams
 * are then remembered like any other: those behind the safe cursor beyond
 * `retain`, or not seen again, are forgotten. O(streams skipped). Returns
 * the state itself when nothing is skipped, or when the skipped versions
 * may lie above the horizon (resumed with `upTo`) and no commit-safe head at
 * or past `upTo` was observed before this poll (see {@link observeHead}).
 *
 * @since 0.1.0
 * @category decisions
 */
export const caughtUp = (state: State): State => {
  const storage = state.storage
  if (storage.skip.size === 0) return state
  const upTo = storage.skipUpTo
  if (upTo !== undefined && (storage.headSeen === undefined || compare(storage.headSeen, upTo) < 0)) return state
  release(storage)
  return { storage, retain: state.retain }
}

/**
 * The cursor the skipped versions wait for (see {@link resume}): defined
 * while versions skipped since a restart may still lie above the xmin
 * horizon, unread. While it is, a subscription whose poll finds nothing
 * reads the commit-safe head and records it ({@link observeHead}).
 *
 * @since 0.2.0
 * @category accessors
 */
export const skippedUpTo = (state: State): Cursor.Cursor | undefined =>
  state.storage.skip.size === 0 ? undefined : state.storage.skipUpTo

/**
 * Records a commit-safe head read after a poll found nothing (every event
 * at or below it is older than the xmin horizon): the next poll that finds
 * nothing has read every event of the subscription at or below it, so if
 * it is at or past {@link skippedUpTo}, {@link caughtUp} then releases the
 * skipped versions. Returns the state itself when nothing waits.
 *
 * @since 0.2.0
 * @category decisions
 */
export const observeHead = (state: State, head: Cursor.Cursor): State => {
  if (skippedUpTo(state) === undefined) return state
  state.storage.headSeen = head
  return { storage: state.storage, retain: state.retain }
}

/** Releases every skipped stream: those seen again are remembered like any other, the others forgotten. */
const release = (storage: Storage): void => {
  const { delivered, held, skip, lastSeen } = storage
  for (const streamId of skip.keys()) {
    const entry = lastSeen.get(streamId)
    if (entry !== undefined && entry.place !== "pinned") continue
    if (entry !== undefined) entry.place = "stale"
    lastSeen.delete(streamId)
    if (!held.has(streamId)) delivered.delete(streamId)
  }
  skip.clear()
  storage.skipUpTo = undefined
  storage.headSeen = undefined
}

/**
 * The cursor a checkpoint may persist: the read cursor, but never past a
 * held event (a restart must present it again).
 *
 * @since 0.1.0
 * @category checkpoints
 */
export const safeCursor = (state: State, read: Cursor.Cursor): Cursor.Cursor => {
  const lowest = peek(state.storage.heldOrder)
  if (lowest === undefined) return read
  const held = Cursor.before(lowest.cursor)
  return compare(held, read) < 0 ? held : read
}

/**
 * The checkpoint to persist after reading up to `read`: the safe cursor, and
 * for every stream with a delivered (or skipped) event past it, the version
 * delivered, so that a restart from the cursor neither delivers those events
 * again nor takes them for an ordering violation. A stream skipped since
 * the restart is recorded as long as a skipped version may still be ahead.
 * Costs O(streams delivered past the cursor + streams skipped since the
 * restart).
 *
 * @since 0.1.0
 * @category checkpoints
 */
export const checkpoint = (state: State, read: Cursor.Cursor): Checkpoint => {
  const { delivered, skip, recent } = state.storage
  const cursor = safeCursor(state, read)
  const out = new Map<string, number>()
  const record = (streamId: string) => {
    const version = Math.max(delivered.get(streamId) ?? 0, skip.get(streamId) ?? 0)
    if (version > 0) out.set(streamId, version)
  }
  for (let i = recent.head; i < recent.items.length; i++) {
    const entry = recent.items[i]!
    if (entry.place === "recent" && compare(entry.cursor, cursor) > 0) record(entry.streamId)
  }
  // Skipped since a restart: a lower skipped version may still be ahead, past the cursor.
  for (const streamId of skip.keys()) record(streamId)
  return { cursor, delivered: out }
}

/**
 * The number of held events.
 *
 * @since 0.1.0
 * @category accessors
 */
export const heldCount = (state: State): number => state.storage.heldMarks.size

/**
 * The number of streams the state remembers (delivered versions, held or not).
 *
 * @since 0.1.0
 * @category accessors
 */
export const rememberedCount = (state: State): number => state.storage.delivered.size

/**
 * The versions held streams wait for: every held stream of the state, or,
 * with a plan, every held stream once the plan is applied. O(held).
 *
 * @since 0.1.0
 * @category accessors
 */
export const waiting = (state: State, decided?: Plan): ReadonlyArray<Waiting> => {
  const out: Array<Waiting> = []
  const { delivered, held } = state.storage
  for (const [streamId, events] of held) {
    if (decided?.changes.has(streamId) === true) continue
    const first = events[0]
    if (first !== undefined) out.push({ streamId, missing: (delivered.get(streamId) ?? 0) + 1, seen: first.streamVersion })
  }
  for (const [streamId, c] of decided?.changes ?? []) {
    const first = c.held[0]
    if (first !== undefined) out.push({ streamId, missing: c.delivered + 1, seen: first.streamVersion })
  }
  return out
}

/**
 * The versions the streams of a plan wait for, once it is applied. O(page).
 *
 * @since 0.1.0
 * @category accessors
 */
export const waitingIn = (decided: Plan): ReadonlyArray<Waiting> => {
  const out: Array<Waiting> = []
  for (const [streamId, c] of decided.changes) {
    const first = c.held[0]
    if (first !== undefined) out.push({ streamId, missing: c.delivered + 1, seen: first.streamVersion })
  }
  return out
}
