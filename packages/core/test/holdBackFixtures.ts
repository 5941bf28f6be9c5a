/**
 * What the pure HoldBack tests share: events of category `c` with rising
 * global positions, and one step of the hold-back that must not fail.
 */
import { assert } from "@effect/vitest"
import * as HoldBack from "../src/HoldBack.js"
import { aggregateIdOf, type RecordedEvent } from "../src/RecordedEvent.js"
import * as StreamId from "../src/StreamId.js"

const at = new Date(0)
let position = 0n

/** An event of `streamId` at `streamVersion`, at the next global position (its transaction id, unless given). */
export const event = (streamId: string, streamVersion: number, transactionId?: bigint): RecordedEvent => {
  position++
  return {
    eventId: `e${position}`,
    streamId: StreamId.fromStored(streamId),
    category: StreamId.categoryFromStored("c"),
    aggregateId: aggregateIdOf(streamId, "c"),
    streamVersion,
    globalPosition: position,
    transactionId: transactionId ?? position,
    eventType: "e",
    schemaVersion: 1,
    data: {},
    metadata: {},
    recordedAt: at
  }
}

/** One hold-back step over `page`; an ordering violation fails the test. */
export const run = (state: HoldBack.State, page: ReadonlyArray<RecordedEvent>, baseline = new Map<string, number>()) => {
  const result = HoldBack.step(state, page, baseline, "sub")
  if ("_tag" in result) return assert.fail(result.message)
  return result
}
