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
}

/** @since 0.1.0 @category constructors */
export const empty: State = { delivered: new Map(), held: new Map() }

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
  const deliver: Array<RecordedEvent> = []
  for (const event of page) {
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
      while (i < waiting.length && waiting[i]!.streamVersion === version + 1) {
        deliver.push(waiting[i]!)
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
  return { state: { delivered, held }, deliver }
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
 * The number of held events.
 *
 * @since 0.1.0
 */
export const heldCount = (state: State): number => {
  let n = 0
  for (const events of state.held.values()) n += events.length
  return n
}
