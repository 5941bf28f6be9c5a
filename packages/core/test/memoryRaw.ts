import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as InMemoryEventStore from "../src/InMemoryEventStore.js"
import type { JsonObject } from "../src/RecordedEvent.js"
import { Raw, TxReadModel } from "./fixtures.js"

/** Raw row access for the in-memory store. */
export const memoryRaw = Layer.effect(
  Raw,
  Effect.map(InMemoryEventStore.InMemory, (mem) =>
    Raw.of({
      setData: (streamId, version, data) => mem.unsafeUpdate(streamId, version, { data: data as JsonObject }),
      setType: (streamId, version, eventType, schemaVersion) =>
        mem.unsafeUpdate(streamId, version, { eventType, schemaVersion }),
      deleteEvent: (streamId, version) => mem.unsafeDelete(streamId, version),
      insert: (row) =>
        Effect.asVoid(
          mem.unsafeInsert({
            eventId: crypto.randomUUID(),
            streamId: row.streamId,
            category: row.category,
            streamVersion: row.version,
            eventType: row.eventType,
            schemaVersion: row.schemaVersion,
            data: row.data as JsonObject,
            metadata: {}
          })
        ),
      setSnapshot: (streamId, streamVersion, snapshotVersion, state) =>
        mem.unsafeWriteSnapshot({ streamId, streamVersion, snapshotVersion, state }),
      count: Effect.sync(() => mem.log.length)
    })
  )
)

/** The in-memory store with raw access. */
export const memoryLayer = memoryRaw.pipe(Layer.provideMerge(InMemoryEventStore.layer))

/** A transactional read model over in-memory transactions (rows appear when the transaction commits). */
export const memoryReadModel = Layer.effect(
  TxReadModel,
  Effect.map(InMemoryEventStore.InMemory, (mem) => {
    const rows: Array<string> = []
    return TxReadModel.of({
      insert: (key) => mem.onCommit(() => rows.push(key)),
      rows: (prefix) => Effect.sync(() => rows.filter((r) => r.startsWith(prefix)))
    })
  })
)
