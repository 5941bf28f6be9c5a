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
 * Both stores' subscriptions run this one function.
 *
 * @since 0.1.0
 */
import * as Cursor from "./Cursor.js"
import { OrderingViolation } from "./EventStoreError.js"
import type { RecordedEvent } from "./RecordedEvent.js"

/**
 * What a subscription remembers between polls.
 *
 * @since 0.1.0
 * @category models
 */
export interface State {
  /** Highest version delivered per stream (seeded from the baseline when a stream is first seen). */
  readonly delivered: ReadonlyMap<string, number>
  /** Events read but held, per stream, ascending by version. */
  readonly held: ReadonlyMap<string, ReadonlyArray<RecordedEvent>>
  /** Versions delivered before a restart, past its checkpoint: skipped when read again. */
  readonly skip: ReadonlyMap<string, number>
  /** The cursor of the last event delivered or skipped per stream (absent: none read yet). */
  readonly lastSeen: ReadonlyMap<string, Cursor.Cursor>
}

/** @since 0.1.0 @category constructors */
export const empty: State = { delivered: new Map(), held: new Map(), skip: new Map(), lastSeen: new Map() }

/**
 * The state of a subscription resuming from a checkpoint that records
 * versions delivered past its cursor.
 *
 * @since 0.1.0
 * @category constructors
 */
export const resume = (delivered: ReadonlyMap<string, number>): State => ({
  delivered: new Map(delivered),
  held: new Map(),
  skip: new Map(delivered),
  lastSeen: new Map()
})

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
 * Streams of a page that the state knows nothing about: their baseline (the
 * highest version at or below the subscription's start cursor) must be
 * looked up before {@link step}.
 *
 * @since 0.1.0
 */
export const unknownStreams = (state: State, page: ReadonlyArray<RecordedEvent>): ReadonlyArray<string> => {
  const unknown = new Set<string>()
  for (const event of page) if (!state.delivered.has(event.streamId)) unknown.add(event.streamId)
  return [...unknown]
}

/**
 * Delivers what a page makes deliverable. `baseline` gives, for streams first
 * seen in this page, the version already delivered before the subscription
 * started (0 if none).
 *
 * @example
 * const result = HoldBack.step(state, page, baseline, "orders-projection")
 * @since 0.1.0
 */
export const step = (
  state: State,
  page: ReadonlyArray<RecordedEvent>,
  baseline: ReadonlyMap<string, number>,
  subscriptionId: string
): Step | OrderingViolation => {
  const delivered = new Map(state.delivered)
  const held = new Map(state.held)
  const lastSeen = new Map(state.lastSeen)
  const deliver: Array<RecordedEvent> = []
  for (const event of page) {
    const skipped = state.skip.get(event.streamId)
    if (skipped !== undefined && event.streamVersion <= skipped) {
      // Delivered before the restart (its checkpoint recorded it): at-least-once needs no second delivery.
      lastSeen.set(event.streamId, Cursor.of(event))
      continue
    }
    const last = delivered.get(event.streamId) ?? baseline.get(event.streamId) ?? 0
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
      const waiting = held.get(event.streamId) ?? []
      let i = 0
      lastSeen.set(event.streamId, Cursor.of(event))
      while (i < waiting.length && waiting[i]!.streamVersion === version + 1) {
        deliver.push(waiting[i]!)
        lastSeen.set(event.streamId, Cursor.max(lastSeen.get(event.streamId)!, Cursor.of(waiting[i]!)))
        version++
        i++
      }
      if (i > 0) {
        if (i === waiting.length) held.delete(event.streamId)
        else held.set(event.streamId, waiting.slice(i))
      }
      delivered.set(event.streamId, version)
    } else {
      delivered.set(event.streamId, last)
      const waiting = [...(held.get(event.streamId) ?? []), event].sort((a, b) => a.streamVersion - b.streamVersion)
      held.set(event.streamId, waiting)
    }
  }
  return { state: { delivered, held, skip: state.skip, lastSeen }, deliver }
}

/**
 * The cursor a checkpoint may persist: the read cursor, but never past a
 * held event (a restart must present it again).
 *
 * @since 0.1.0
 */
export const safeCursor = (state: State, read: Cursor.Cursor): Cursor.Cursor => {
  let safe = read
  for (const events of state.held.values()) {
    for (const event of events) safe = Cursor.min(safe, Cursor.before(Cursor.of(event)))
  }
  return safe
}

/**
 * The checkpoint to persist after reading up to `read`: the safe cursor, and
 * for every stream with a delivered (or skipped) event past it, the version
 * delivered, so that a restart from the cursor neither delivers those events
 * again nor takes them for an ordering violation.
 *
 * @since 0.1.0
 */
export const checkpoint = (state: State, read: Cursor.Cursor): Checkpoint => {
  const cursor = safeCursor(state, read)
  const delivered = new Map<string, number>()
  for (const [streamId, version] of state.delivered) {
    const seen = state.lastSeen.get(streamId)
    // Unseen since a restart: its recorded versions are still past the cursor.
    const pending = seen === undefined ? state.skip.has(streamId) : Cursor.order(seen, cursor) > 0
    if (pending && version > 0) delivered.set(streamId, Math.max(version, state.skip.get(streamId) ?? 0))
  }
  return { cursor, delivered }
}

/**
 * The number of held events.
 *
 * @since 0.1.0
 */
export const heldCount = (state: State): number => {
  let n = 0
  for (const events of state.held.values()) n += events.length
  return n
}
