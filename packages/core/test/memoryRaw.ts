import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as EventStore from "../src/EventStore.js"
import * as InMemory from "../src/InMemory.js"
import { isPlainObject, parseAsJsonb } from "../src/internal/json.js"
import type { JsonObject } from "../src/RecordedEvent.js"
import * as StreamId from "../src/StreamId.js"
import { Raw, TxReadModel } from "@mire/core/conformance"

/** What a jsonb column holds after `JSON.stringify(value)::jsonb`, as the driver hands it back. */
const viaJson = (value: unknown): unknown => parseAsJsonb(JSON.stringify(value))

const jsonObject = (value: unknown): JsonObject => {
  const parsed = viaJson(value)
  return isPlainObject(parsed) ? parsed : {}
}

/** Raw row access for the in-memory store (values stored as Postgres would: after a JSON round trip). */
export const memoryRaw = Layer.effect(
  Raw,
  Effect.map(InMemory.Driver, (mem) =>
    Raw.of({
      setData: (streamId, version, data) => mem.unsafeUpdate(streamId, version, { data: jsonObject(data) }),
      setType: (streamId, version, eventType, schemaVersion) =>
        mem.unsafeUpdate(streamId, version, { eventType, schemaVersion }),
      deleteEvent: (streamId, version) => mem.unsafeDelete(streamId, version),
      insert: (row) =>
        Effect.asVoid(
          mem.unsafeInsert({
            eventId: crypto.randomUUID(),
            // A raw row, as a store holds it: branded without the append's checks.
            streamId: StreamId.fromStored(row.streamId),
            category: StreamId.categoryFromStored(row.category),
            streamVersion: row.version,
            eventType: row.eventType,
            schemaVersion: row.schemaVersion,
            data: jsonObject(row.data),
            metadata: {}
          })
        ),
      setSnapshot: (streamId, streamVersion, snapshotVersion, state) =>
        mem.unsafeWriteSnapshot({ streamId, streamVersion, snapshotVersion, state: viaJson(state) }),
      count: Effect.sync(() => mem.log.length)
    })
  )
)

/** The in-memory store with raw access. */
export const memoryLayer = memoryRaw.pipe(Layer.provideMerge(EventStore.layerMemory))

/** The in-memory store with raw access, built with the given limits. */
export const memoryLayerWith = (options: Partial<EventStore.Options>) =>
  memoryRaw.pipe(Layer.provideMerge(EventStore.layerMemoryWith(options)))

/** A transactional read model over in-memory transactions (rows appear when the transaction commits). */
export const memoryReadModel = Layer.effect(
  TxReadModel,
  Effect.map(InMemory.Driver, (mem) => {
    const rows: Array<string> = []
    return TxReadModel.of({
      insert: (key) => mem.onCommit(() => rows.push(key)),
      rows: (prefix) => Effect.sync(() => rows.filter((r) => r.startsWith(prefix)))
    })
  })
)
