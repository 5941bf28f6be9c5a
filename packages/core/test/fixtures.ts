/**
 * A small domain shared by the test suites.
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Aggregate from "../src/Aggregate.js"

export const Opened = Schema.TaggedStruct("Opened", { owner: Schema.String })
export const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Number.pipe(Schema.positive()) })
export const Withdrawn = Schema.TaggedStruct("Withdrawn", { amount: Schema.Number.pipe(Schema.positive()) })
export const Closed = Schema.TaggedStruct("Closed", {})
export const AccountEvent = Schema.Union(Opened, Deposited, Withdrawn, Closed)
export type AccountEvent = typeof AccountEvent.Type

export const AccountState = Schema.Struct({
  owner: Schema.String,
  balance: Schema.Number,
  open: Schema.Boolean,
  events: Schema.Number
})
export type AccountState = typeof AccountState.Type

export const apply = (state: AccountState, event: AccountEvent): AccountState => {
  const counted = { ...state, events: state.events + 1 }
  switch (event._tag) {
    case "Opened":
      return { ...counted, owner: event.owner, open: true }
    case "Deposited":
      return { ...counted, balance: state.balance + event.amount }
    case "Withdrawn":
      return { ...counted, balance: state.balance - event.amount }
    case "Closed":
      return { ...counted, open: false }
  }
}

export const initial: AccountState = { owner: "", balance: 0, open: false, events: 0 }

/** An account aggregate in a category of the caller's choosing (tests use unique ones). */
export const account = (category = "account", every = 0) =>
  Aggregate.make({
    category,
    events: AccountEvent,
    initial,
    apply,
    ...(every > 0 ? { snapshot: { schema: AccountState, version: 1, every } } : {})
  })

export const unique = (prefix: string): string => `${prefix}${Math.random().toString(36).slice(2, 10)}`

/** Raw access to a store's rows, for tests that must write what the API refuses to. */
export interface RawLog {
  /** Replaces an event's stored data. */
  readonly setData: (streamId: string, version: number, data: unknown) => Effect.Effect<void>
  /** Replaces an event's stored type and schema version. */
  readonly setType: (streamId: string, version: number, eventType: string, schemaVersion: number) => Effect.Effect<void>
  /** Deletes an event (a gap). */
  readonly deleteEvent: (streamId: string, version: number) => Effect.Effect<void>
  /** Inserts an event row as-is (and its stream row). */
  readonly insert: (row: {
    readonly streamId: string
    readonly category: string
    readonly version: number
    readonly eventType: string
    readonly schemaVersion: number
    readonly data: unknown
  }) => Effect.Effect<void>
  /** Writes a snapshot row as-is. */
  readonly setSnapshot: (streamId: string, streamVersion: number, snapshotVersion: number, state: unknown) => Effect.Effect<void>
  /** Number of events in the whole log. */
  readonly count: Effect.Effect<number>
}

export class Raw extends Context.Tag("test/Raw")<Raw, RawLog>() {}

/** A read model that commits with the transaction it is written in (for transactional handlers). */
export interface TxReadModelService {
  /** Records a row inside the ambient transaction. */
  readonly insert: (key: string) => Effect.Effect<void>
  /** Every committed row (duplicates included). */
  readonly rows: (prefix: string) => Effect.Effect<ReadonlyArray<string>>
}

export class TxReadModel extends Context.Tag("test/TxReadModel")<TxReadModel, TxReadModelService>() {}
