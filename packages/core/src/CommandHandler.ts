/**
 * Command handlers: load → decide → save, in one call. A handler loads an
 * aggregate, asks a pure `decide(state, command)` for the events to record
 * (or a typed domain error), and saves them expecting the version it loaded,
 * retrying the whole unit of work on `ConcurrencyConflict` with a bounded
 * `Schedule`. Given a command id, it is idempotent: the id is recorded in
 * the `CommandLog` in the same transaction as the events, and a repeated id
 * returns the first outcome without deciding or appending again.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import type * as Aggregate from "./Aggregate.js"
import * as AggregateRoot from "./AggregateRoot.js"
import * as CommandLog from "./CommandLog.js"
import * as EventStore from "./EventStore.js"
import { ConcurrencyConflict, InvalidInput, StoreError } from "./EventStoreError.js"
import type { EventMetadata } from "./RecordedEvent.js"
import * as StreamId from "./StreamId.js"

/**
 * The decision of a command: from the aggregate's current state alone, the
 * events to record (none: the command changes nothing) or a typed domain
 * error. It must be pure (it has no services, and runs again on every retry):
 * return `Effect.succeed([...])`/`Effect.fail(error)`, an `Either`, or
 * write it with `Effect.gen`.
 *
 * @since 0.2.0
 * @category models
 */
export type Decide<S, E, C, DE> = (state: S, command: C) => Effect.Effect<ReadonlyArray<E>, DE>

/**
 * A command this call decided: the saved root (version advanced, nothing
 * pending), the events `decide` returned (none: nothing was appended), and,
 * when the command had an id and appended, what the command log now holds.
 *
 * @since 0.2.0
 * @category models
 */
export interface Decided<S, E> {
  readonly _tag: "Decided"
  readonly root: AggregateRoot.AggregateRoot<S, E>
  readonly events: ReadonlyArray<E>
  readonly record: Option.Option<CommandLog.CommandRecord>
}

/**
 * A command id already handled: the first outcome, from the command log.
 * Nothing was decided or appended this time.
 *
 * @since 0.2.0
 * @category models
 */
export interface Repeated {
  readonly _tag: "Repeated"
  readonly record: CommandLog.CommandRecord
}

/**
 * What handling a command returned.
 *
 * @since 0.2.0
 * @category models
 */
export type Outcome<S, E> = Decided<S, E> | Repeated

/**
 * The errors a handler can fail with: the domain's own, the last
 * `ConcurrencyConflict` once the retries are spent, and the store's
 * (`InvalidInput` for a bad id, command id or event, a decode error, a
 * corrupt stream, a storage failure).
 *
 * @since 0.2.0
 * @category models
 */
export type HandleError<DE> = DE | EventStore.LoadError | EventStore.AppendError

/**
 * Options of one call: the metadata every event of the command is saved with.
 *
 * @since 0.2.0
 * @category models
 */
export interface HandleOptions {
  readonly metadata?: EventMetadata | undefined
  readonly commandId?: undefined
}

/**
 * Options of an idempotent call: the command id (an ASCII token of 1–255
 * characters, e.g. a UUID the client chose) and the events' metadata.
 *
 * @since 0.2.0
 * @category models
 */
export interface IdempotentOptions {
  readonly commandId: string
  readonly metadata?: EventMetadata | undefined
}

/**
 * A command handler for one aggregate: call it with the aggregate id and the
 * command. With a `commandId` it also needs the `CommandLog`
 * (`PgStore.layer` and `InMemory.layer` provide it).
 *
 * @since 0.2.0
 * @category models
 */
export interface CommandHandler<S, E, C, DE> {
  (
    id: string,
    command: C,
    options: IdempotentOptions
  ): Effect.Effect<Outcome<S, E>, HandleError<DE>, EventStore.EventStore | CommandLog.CommandLog>
  (id: string, command: C, options?: HandleOptions): Effect.Effect<Outcome<S, E>, HandleError<DE>, EventStore.EventStore>
}

/**
 * The default retry on `ConcurrencyConflict`: 4 retries (5 attempts in all),
 * with jittered exponential backoff from 10 ms (about 150 ms in all).
 *
 * @since 0.2.0
 * @category retry
 */
export const defaultRetry: Schedule.Schedule<unknown, ConcurrencyConflict> = Schedule.exponential("10 millis").pipe(
  Schedule.jittered,
  Schedule.intersect(Schedule.recurs(4)),
  Schedule.asVoid
)

/**
 * Checks a command id: an ASCII token of 1–255 characters, as ids are.
 *
 * @since 0.2.0
 * @category validation
 */
export const invalidCommandId = (commandId: unknown): InvalidInput | undefined =>
  typeof commandId !== "string"
    ? new InvalidInput({ field: "commandId", reason: "must be a string" })
    : StreamId.invalid(commandId, "commandId")

/**
 * What a repeated command id resolves to: the first outcome when it was for
 * the same stream, `InvalidInput` when it was used for another stream.
 *
 * @since 0.2.0
 * @category decisions
 */
export const repeated = (record: CommandLog.CommandRecord, streamId: string): Either.Either<Repeated, InvalidInput> =>
  record.streamId === streamId
    ? Either.right({ _tag: "Repeated", record })
    : Either.left(
        new InvalidInput({
          field: "commandId",
          reason: `command id ${record.commandId} was already used for ${record.streamId}, not ${streamId}`
        })
      )

/**
 * The command-log record of an append, from the events it wrote (read back
 * in its transaction, in version order).
 *
 * @since 0.2.0
 * @category decisions
 */
export const recordOf = (
  commandId: string,
  streamId: StreamId.StreamId,
  written: ReadonlyArray<{ readonly eventId: string; readonly streamVersion: number; readonly globalPosition: bigint; readonly transactionId: bigint }>
): CommandLog.NewCommandRecord | undefined => {
  const first = written[0]
  const last = written[written.length - 1]
  if (first === undefined || last === undefined) return undefined
  let firstPosition = first.globalPosition
  let lastPosition = first.globalPosition
  for (const event of written) {
    if (event.globalPosition < firstPosition) firstPosition = event.globalPosition
    if (event.globalPosition > lastPosition) lastPosition = event.globalPosition
  }
  return {
    commandId,
    streamId,
    firstVersion: first.streamVersion,
    lastVersion: last.streamVersion,
    firstPosition,
    lastPosition,
    transactionId: first.transactionId,
    eventIds: written.map((event) => event.eventId)
  }
}

/** A concurrent transaction committed the same command id first: this attempt rolls back. */
class Taken {
  readonly _tag = "Taken"
}

const isConflict = (u: unknown): u is ConcurrencyConflict => u instanceof ConcurrencyConflict

/**
 * Retries `effect` with `schedule` while it fails with `ConcurrencyConflict`;
 * any other failure ends it at once. The last conflict surfaces as it is.
 *
 * @since 0.2.0
 * @category retry
 */
export const retryConflicts = <A, Err, R>(
  effect: Effect.Effect<A, Err, R>,
  schedule: Schedule.Schedule<unknown, ConcurrencyConflict>
): Effect.Effect<A, Err | ConcurrencyConflict, R> => {
  // Every error but a conflict leaves the retried effect as a value, so the schedule sees conflicts only.
  const separated: Effect.Effect<Either.Either<A, Err>, ConcurrencyConflict, R> = Effect.catchAll(
    Effect.map(effect, (a) => Either.right(a)),
    (error): Effect.Effect<Either.Either<A, Err>, ConcurrencyConflict> =>
      isConflict(error) ? Effect.fail(error) : Effect.succeed(Either.left(error))
  )
  return Effect.flatMap(
    Effect.retry(separated, schedule),
    Either.match({ onLeft: (error) => Effect.fail(error), onRight: (a) => Effect.succeed(a) })
  )
}

/**
 * Builds a command handler for an aggregate from a pure {@link Decide}.
 * Each call loads the aggregate (from its snapshot when it has a snapshot
 * policy), decides, and saves the events expecting the loaded version (and
 * writes a snapshot when one is due), retrying the whole unit of work on
 * `ConcurrencyConflict` with `retry` ({@link defaultRetry} unless given).
 *
 * With a `commandId`, the events and the command-log record commit in one
 * transaction, and a repeated id returns {@link Repeated} (the first outcome)
 * without deciding or appending, even when two calls race (exactly one
 * appends). A repeated id for another aggregate is `InvalidInput`. Only
 * successful appends are recorded: a command refused with a domain error, or
 * one that decided no events, is decided again next time.
 *
 * @example
 * ```ts
 * import { Aggregate, CommandHandler, EventStore, InMemory } from "@mire/core"
 * import { Data, Effect, Schema } from "effect"
 *
 * const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Number })
 * const Account = Aggregate.make({
 *   category: "account",
 *   events: Deposited,
 *   initial: { balance: 0 },
 *   apply: (state, event) => ({ balance: state.balance + event.amount })
 * })
 * class TooMuch extends Data.TaggedError("TooMuch")<{ readonly balance: number }> {}
 *
 * const deposit = CommandHandler.make({
 *   aggregate: Account,
 *   decide: (state, amount: number) =>
 *     state.balance + amount > 1000 ? Effect.fail(new TooMuch({ balance: state.balance })) : Effect.succeed([Deposited.make({ amount })])
 * })
 *
 * const program = Effect.gen(function* () {
 *   const first = yield* deposit("42", 100, { commandId: "c-1" })
 *   const again = yield* deposit("42", 100, { commandId: "c-1" }) // Repeated: nothing appended
 *   return [first._tag, again._tag]
 * })
 * Effect.runPromise(program.pipe(Effect.provide(InMemory.layer))).then((tags) => assert.deepStrictEqual(tags, ["Decided", "Repeated"]))
 * ```
 * @since 0.2.0
 * @category constructors
 */
export const make = <S, E, C, DE = never>(options: {
  readonly aggregate: Aggregate.Aggregate<S, E>
  readonly decide: Decide<S, E, C, DE>
  readonly retry?: Schedule.Schedule<unknown, ConcurrencyConflict> | undefined
}): CommandHandler<S, E, C, DE> => {
  const { aggregate, decide } = options
  const schedule = options.retry ?? defaultRetry

  /** Load, decide, record: the root to save and the decided events. */
  const decideOnce = (store: EventStore.EventStore, id: string, command: C, metadata: EventMetadata | undefined) =>
    Effect.gen(function* () {
      const loaded = yield* store.loadSnapshotted(aggregate, id)
      const root = Option.getOrElse(loaded, () => AggregateRoot.make(aggregate, id))
      const events = yield* decide(root.state, command)
      const recorded = AggregateRoot.record(root, ...events)
      return { root, events, recorded: metadata === undefined ? recorded : AggregateRoot.withMetadata(recorded, metadata) }
    })

  const plain = (id: string, command: C, metadata: EventMetadata | undefined) =>
    Effect.flatMap(EventStore.EventStore, (store) =>
      retryConflicts(
        Effect.flatMap(
          decideOnce(store, id, command, metadata),
          ({ events, recorded }): Effect.Effect<Outcome<S, E>, EventStore.AppendError> =>
            Effect.map(store.saveSnapshotting(recorded), (root) => ({ _tag: "Decided", root, events, record: Option.none() }))
        ),
        schedule
      )
    )

  const idempotent = (id: string, command: C, commandId: string, metadata: EventMetadata | undefined) =>
    Effect.gen(function* () {
      const store = yield* EventStore.EventStore
      const log = yield* CommandLog.CommandLog
      const fault = invalidCommandId(commandId)
      if (fault !== undefined) return yield* fault
      const streamId = StreamId.parseAggregate(aggregate.category, id)
      if (streamId instanceof InvalidInput) return yield* streamId
      /** The first outcome of the command id, if it has one (`InvalidInput` if it was for another stream). */
      const lookup: Effect.Effect<Option.Option<Repeated>, InvalidInput | StoreError> = Effect.flatMap(
        log.find(commandId),
        Option.match({
          onNone: () => Effect.succeed(Option.none()),
          onSome: (record) =>
            Either.match(repeated(record, streamId), { onLeft: Effect.fail, onRight: (r) => Effect.succeed(Option.some(r)) })
        })
      )
      const attempt = Effect.gen(function* () {
        const seen = yield* lookup
        if (Option.isSome(seen)) return seen.value
        const { events, recorded, root } = yield* decideOnce(store, id, command, metadata)
        if (events.length === 0) {
          const outcome: Outcome<S, E> = { _tag: "Decided", root, events, record: Option.none() }
          return outcome
        }
        const saved = yield* store.transaction(
          Effect.gen(function* () {
            const next = yield* store.saveSnapshotting(recorded)
            const written = yield* Stream.runCollect(
              store.readStream(streamId, { from: root.version + 1, limit: events.length })
            )
            const entry = recordOf(commandId, streamId, Array.from(written))
            if (entry === undefined || entry.lastVersion !== next.version) {
              return yield* new StoreError({
                kind: "Other",
                operation: "CommandHandler",
                cause: new Error(`the events of command ${commandId} are not in ${streamId} after its append`)
              })
            }
            const stored = yield* log.record(entry)
            if (Option.isNone(stored)) return yield* Effect.fail(new Taken())
            return { root: next, record: stored.value }
          })
        ).pipe(
          // Another transaction recorded the id first: ours rolled back; its outcome is the answer.
          Effect.catchIf(
            (error): error is Taken => error instanceof Taken,
            () =>
              Effect.flatMap(lookup, (found) =>
                Option.isSome(found)
                  ? Effect.succeed(found.value)
                  : Effect.fail(
                      new StoreError({
                        kind: "Other",
                        operation: "CommandHandler",
                        cause: new Error(`command id ${commandId} is taken but has no record`)
                      })
                    )
              )
          )
        )
        if ("_tag" in saved) return saved
        const outcome: Outcome<S, E> = { _tag: "Decided", root: saved.root, events, record: Option.some(saved.record) }
        return outcome
      })
      return yield* retryConflicts(attempt, schedule).pipe(
        // Out of retries: a conflict may have been lost to the same command id, whose outcome is then the answer.
        Effect.catchIf(isConflict, (conflict) =>
          Effect.flatMap(lookup, (found) => (Option.isSome(found) ? Effect.succeed(found.value) : Effect.fail(conflict)))
        )
      )
    })

  function handle(
    id: string,
    command: C,
    options: IdempotentOptions
  ): Effect.Effect<Outcome<S, E>, HandleError<DE>, EventStore.EventStore | CommandLog.CommandLog>
  function handle(id: string, command: C, options?: HandleOptions): Effect.Effect<Outcome<S, E>, HandleError<DE>, EventStore.EventStore>
  function handle(
    id: string,
    command: C,
    options?: HandleOptions | IdempotentOptions
  ): Effect.Effect<Outcome<S, E>, HandleError<DE>, EventStore.EventStore | CommandLog.CommandLog> {
    const commandId = options?.commandId
    const run = commandId === undefined ? plain(id, command, options?.metadata) : idempotent(id, command, commandId, options?.metadata)
    return run.pipe(
      Effect.withSpan("CommandHandler.handle", {
        attributes: {
          "mire.category": aggregate.category,
          "mire.aggregate_id": id,
          ...(commandId === undefined ? {} : { "mire.command_id": commandId })
        },
        captureStackTrace: false
      })
    )
  }

  return handle
}
