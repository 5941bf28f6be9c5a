/**
 * The command log: which command ids have been handled, and what each one
 * appended. `CommandHandler` records a command id in the same transaction as
 * the command's events, so a repeated command id finds the first outcome
 * instead of appending again. One tag, two layers (`PgCommandLog.layer` from
 * `@mire/pg`, in `PgStore.layer`, and {@link layerMemory}, in
 * `InMemory.layer`).
 *
 * @since 0.2.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import type { StoreError } from "./EventStoreError.js"
import * as Memory from "./internal/memory/eventStore.js"
import * as MemoryCommandLog from "./internal/memory/commandLog.js"
import type { CommittedEvents } from "./RecordedEvent.js"

/**
 * What a handled command appended, as the log keeps it: its stream, the
 * version and position range of its events, their ids (in order), the
 * appending transaction's id and when it was recorded.
 *
 * @since 0.2.0
 * @category models
 */
export interface CommandRecord extends CommittedEvents {
  readonly commandId: string
  readonly eventIds: ReadonlyArray<string>
  readonly recordedAt: Date
}

/**
 * A record to write: everything but the time, which the store sets.
 *
 * @since 0.2.0
 * @category models
 */
export type NewCommandRecord = Omit<CommandRecord, "recordedAt">

/**
 * The storage primitives of the command log. Inputs arrive validated (a
 * command id is an ASCII token of 1–255 characters).
 *
 * @since 0.2.0
 * @category storage
 */
export interface CommandLog {
  /** The record of a command id, as the current transaction (or a fresh read) sees it. */
  readonly find: (commandId: string) => Effect.Effect<Option.Option<CommandRecord>, StoreError>
  /**
   * Records a command id in the current transaction, unless it is taken:
   * `None` when a committed transaction (or this one) already recorded it.
   * While another open transaction holds the same id, it waits for that one
   * to end, so of two concurrent transactions recording one id exactly one
   * commits it.
   */
  readonly record: (record: NewCommandRecord) => Effect.Effect<Option.Option<CommandRecord>, StoreError>
}

/**
 * The `CommandLog` tag.
 *
 * @since 0.2.0
 * @category tags
 */
export const CommandLog: Context.Tag<CommandLog, CommandLog> = Context.GenericTag<CommandLog>("@mire/core/CommandLog")

/**
 * The in-memory `CommandLog`, over the driver of `EventStore.layerMemory`
 * (`InMemory.layer` provides both): records commit and roll back with the
 * in-memory transactions, and a command id is locked like a row until the
 * transaction recording it ends.
 *
 * @example
 * ```ts
 * import { CommandLog, EventStore } from "@mire/core"
 * import { Effect, Layer } from "effect"
 *
 * const layer = CommandLog.layerMemory.pipe(Layer.provideMerge(EventStore.layerMemory))
 * const program = Effect.flatMap(CommandLog.CommandLog, (log) => log.find("cmd-1")).pipe(Effect.provide(layer))
 * ```
 * @since 0.2.0
 * @category layers
 */
export const layerMemory: Layer.Layer<CommandLog, never, Memory.Driver> = Layer.effect(
  CommandLog,
  Effect.map(Memory.Driver, MemoryCommandLog.make)
)
