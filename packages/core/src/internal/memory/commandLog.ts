/**
 * The in-memory `CommandLog`: the same rules as Postgres's `es_commands`. A
 * record becomes visible to others when its transaction commits (and is
 * dropped when it rolls back); until then its command id is locked, so a
 * second transaction recording the same id waits, then finds it taken.
 *
 * @since 0.2.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
import type * as CommandLog from "../../CommandLog.js"
import type * as Memory from "./eventStore.js"

// A space never occurs in a command id (an ASCII token), so these keys cannot collide with others' locks.
const lockKey = (commandId: string) => `command ${commandId}`

/**
 * Builds the command log over an in-memory event store's driver.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (mem: Memory.Driver): CommandLog.CommandLog => {
  const committed = new Map<string, CommandLog.CommandRecord>()
  // Records of open transactions, visible only to their own transaction (as an uncommitted row is).
  const pending = new Map<string, { readonly tx: Memory.Transaction; readonly record: CommandLog.CommandRecord }>()

  const visible = (tx: Option.Option<Memory.Transaction>, commandId: string): CommandLog.CommandRecord | undefined => {
    const found = committed.get(commandId)
    if (found !== undefined) return found
    const own = pending.get(commandId)
    return own !== undefined && Option.isSome(tx) && own.tx === tx.value ? own.record : undefined
  }

  return {
    find: (commandId) =>
      Effect.map(FiberRef.get(mem.currentTransaction), (tx) => Option.fromNullable(visible(tx, commandId))),
    record: (record) =>
      mem.transaction(
        Effect.zipRight(
          mem.lock(lockKey(record.commandId)),
          Effect.flatMap(Effect.zip(FiberRef.get(mem.currentTransaction), Clock.currentTimeMillis), ([tx, now]) => {
            if (Option.isNone(tx) || visible(tx, record.commandId) !== undefined) return Effect.succeed(Option.none())
            const stored: CommandLog.CommandRecord = { ...record, eventIds: [...record.eventIds], recordedAt: new Date(now) }
            pending.set(record.commandId, { tx: tx.value, record: stored })
            return Effect.as(
              mem.onCommit(() => {
                committed.set(record.commandId, stored)
                pending.delete(record.commandId)
              }),
              Option.some(stored)
            )
          })
        )
      )
  }
}
