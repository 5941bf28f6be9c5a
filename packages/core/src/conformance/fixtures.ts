/**
 * What the conformance suites share: a small bank-account domain, unique
 * names so suites can share one database, and the two services a store under
 * test provides besides the event store (`Raw` row access and a
 * transactional read model `TxReadModel`).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Aggregate from "../Aggregate.js"

/**
 * An account was opened for its owner.
 *
 * @since 0.1.0
 * @category domain
 */
export const Opened = Schema.TaggedStruct("Opened", { owner: Schema.String })
/**
 * Money was paid in (a positive amount).
 *
 * @since 0.1.0
 * @category domain
 */
export const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Number.pipe(Schema.positive()) })
/**
 * Money was taken out (a positive amount).
 *
 * @since 0.1.0
 * @category domain
 */
export const Withdrawn = Schema.TaggedStruct("Withdrawn", { amount: Schema.Number.pipe(Schema.positive()) })
/**
 * The account was closed.
 *
 * @since 0.1.0
 * @category domain
 */
export const Closed = Schema.TaggedStruct("Closed", {})
/**
 * Every event of the account domain.
 *
 * @since 0.1.0
 * @category domain
 */
export const AccountEvent = Schema.Union(Opened, Deposited, Withdrawn, Closed)
/**
 * An event of the account domain.
 *
 * @since 0.1.0
 * @category domain
 */
export type AccountEvent = typeof AccountEvent.Type

/**
 * An account's folded state (with the number of events folded in).
 *
 * @since 0.1.0
 * @category domain
 */
export const AccountState = Schema.Struct({
  owner: Schema.String,
  balance: Schema.Number,
  open: Schema.Boolean,
  events: Schema.Number
})
/**
 * An account's folded state.
 *
 * @since 0.1.0
 * @category domain
 */
export type AccountState = typeof AccountState.Type

/**
 * Folds one event into the state.
 *
 * @since 0.1.0
 * @category domain
 */
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

/**
 * The state before any event.
 *
 * @since 0.1.0
 * @category domain
 */
export const initial: AccountState = { owner: "", balance: 0, open: false, events: 0 }

/**
 * An account aggregate in a category of the caller's choosing (suites use
 * unique ones); with `every > 0` it snapshots every that many events.
 *
 * @since 0.1.0
 * @category domain
 */
export const account = (category = "account", every = 0) =>
  Aggregate.make({
    category,
    events: AccountEvent,
    initial,
    apply,
    ...(every > 0 ? { snapshot: { schema: AccountState, version: 1, every } } : {})
  })

/**
 * A name unique to this run (`prefix` + 8 random characters), so suites can
 * share one database.
 *
 * @since 0.1.0
 * @category helpers
 */
export const unique = (prefix: string): string => `${prefix}${Math.random().toString(36).slice(2, 10)}`

/**
 * Raw access to a store's rows, for suites that must write what the API
 * refuses to (corrupt data, gaps, stale snapshots). A store under test
 * provides it as `Raw`; values it writes must read back as the store's own
 * rows do.
 *
 * @since 0.1.0
 * @category services
 */
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

/**
 * The `RawLog` of the store under test.
 *
 * @since 0.1.0
 * @category services
 */
export class Raw extends Context.Tag("@mire/core/conformance/Raw")<Raw, RawLog>() {}

/**
 * A read model that commits with the transaction it is written in (for
 * transactional handlers).
 *
 * @since 0.1.0
 * @category services
 */
export interface TxReadModelService {
  /** Records a row inside the ambient transaction. */
  readonly insert: (key: string) => Effect.Effect<void>
  /** Every committed row (duplicates included). */
  readonly rows: (prefix: string) => Effect.Effect<ReadonlyArray<string>>
}

/**
 * The transactional read model of the store under test: its rows appear only
 * when the transaction they were written in commits.
 *
 * @since 0.1.0
 * @category services
 */
export class TxReadModel extends Context.Tag("@mire/core/conformance/TxReadModel")<TxReadModel, TxReadModelService>() {}
