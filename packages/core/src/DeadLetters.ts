/**
 * Dead letters: the events a projection with `onFailure: "skip"` set aside
 * instead of stopping. An event whose handler kept failing (or that could
 * not be decoded) is recorded with its error and attempts, status `failed`;
 * the later events of the same stream are parked behind it (status
 * `parked`), so a stream is never handled out of order, while every other
 * stream goes on. An operator lists them, marks them for redelivery
 * (`retry`: the projection's leader handles them again at its next batch
 * boundary, the parked ones after them, in version order) or discards them
 * (the parked ones behind a discarded event are then redelivered).
 *
 * The store keeps no copy of an event's data: a redelivery reads the event
 * from the log by its global position. An event no longer in the log (its
 * stream deleted or truncated since) is not dropped silently: its dead letter
 * turns `failed` with an `EventGone` error, and its stream stays parked until
 * an operator discards it.
 *
 * A partitioned projection's shards (`<id>#<k>of<K>`) are subscriptions of
 * their own; a selection of `all` of a projection's id covers its shards.
 *
 * @since 0.2.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import { InvalidInput, type StoreError } from "./EventStoreError.js"
import * as Memory from "./internal/memory/eventStore.js"
import * as MemoryDeadLetterStore from "./internal/memory/deadLetterStore.js"
import type { Fence, LeaseLost } from "./Lease.js"
import * as Partition from "./Partition.js"
import type { RecordedEvent } from "./RecordedEvent.js"
import * as SubscriptionId from "./SubscriptionId.js"

/**
 * Where a dead letter stands:
 *
 * - `failed`: its handler kept failing (or it could not be decoded); it waits for an operator;
 * - `retry`: an operator asked for a redelivery; the leader handles it at its next batch boundary;
 * - `parked`: a later event of a stream with a dead letter, set aside to keep the stream in
 *   order; redelivered on its own once every dead letter before it is resolved.
 *
 * @since 0.2.0
 * @category models
 */
export const Status = Schema.Literal("failed", "parked", "retry")

/**
 * @since 0.2.0
 * @category models
 */
export type Status = typeof Status.Type

/**
 * One dead letter. Its encoded side is the JSON of `mire dead-letters list
 * --json`: bigints as strings, times as ISO 8601 strings.
 *
 * @since 0.2.0
 * @category models
 */
export const DeadLetter = Schema.Struct({
  /** The store's id of the dead letter (what `retry` and `discard` take). */
  id: Schema.BigInt,
  subscriptionId: Schema.String,
  globalPosition: Schema.BigInt,
  streamId: Schema.String,
  streamVersion: Schema.Number,
  eventType: Schema.String,
  /** The last error (for a parked event: which dead letter it waits behind). */
  error: Schema.String,
  /** Attempts at handling it so far (0 for a parked event). */
  attempts: Schema.Number,
  firstFailedAt: Schema.Date,
  lastFailedAt: Schema.Date,
  status: Status
})

/**
 * @since 0.2.0
 * @category models
 */
export type DeadLetter = typeof DeadLetter.Type

/**
 * A dead letter as the runner records it.
 *
 * @since 0.2.0
 * @category models
 */
export interface NewDeadLetter {
  readonly globalPosition: bigint
  readonly streamId: string
  readonly streamVersion: number
  readonly eventType: string
  readonly error: string
  readonly attempts: number
  readonly status: "failed" | "parked"
}

/**
 * A dead letter due for redelivery, with its event as the log holds it now
 * (none: the event is no longer in the log).
 *
 * @since 0.2.0
 * @category models
 */
export interface Due {
  readonly letter: DeadLetter
  readonly event: Option.Option<RecordedEvent>
}

/**
 * A subscription's dead letters by status.
 *
 * @since 0.2.0
 * @category models
 */
export interface Counts {
  readonly failed: number
  readonly parked: number
  readonly retry: number
}

/**
 * No dead letters.
 *
 * @since 0.2.0
 * @category constructors
 */
export const noCounts: Counts = { failed: 0, parked: 0, retry: 0 }

/**
 * Which dead letters an operation is about: some by id, or all of one
 * subscription's (of a partitioned projection's id: all of its shards' too,
 * see {@link covers}).
 *
 * @since 0.2.0
 * @category models
 */
export type Selection =
  | { readonly _tag: "Ids"; readonly ids: ReadonlyArray<bigint> }
  | { readonly _tag: "All"; readonly subscriptionId: string }

/**
 * The storage primitives of dead letters. Every write of a leader runs in
 * {@link DeadLetterStore.fenced}, so a superseded leader writes nothing.
 *
 * @since 0.2.0
 * @category storage
 */
export interface DeadLetterStore {
  /**
   * Records dead letters of a subscription, in the ambient transaction if
   * any. Idempotent by `(subscription, globalPosition)`: a row already
   * there is kept as it is (a redelivered batch changes nothing).
   */
  readonly record: (subscriptionId: string, letters: ReadonlyArray<NewDeadLetter>) => Effect.Effect<void, StoreError>
  /**
   * The streams with at least one dead letter of the subscription: their new
   * events are parked. The leader reads it once per leadership (one index
   * probe per stream) and keeps the set up to date itself.
   */
  readonly parkedStreams: (subscriptionId: string) => Effect.Effect<ReadonlySet<string>, StoreError>
  /**
   * The dead letters due for redelivery: of every stream whose oldest dead
   * letter is `retry` or `parked`, its dead letters in version order, with
   * their events; at most `limit` (whole streams first, in stream order:
   * code points). It reads the heads stream by stream (an index probe
   * each), never every dead letter of the subscription. A `failed` letter
   * behind the head may be among them: {@link redeliveries} stops there.
   */
  readonly due: (subscriptionId: string, limit: number) => Effect.Effect<ReadonlyArray<Due>, StoreError>
  /** Deletes a dead letter that its redelivery resolved (inside {@link fenced}). */
  readonly resolve: (subscriptionId: string, id: bigint) => Effect.Effect<void, StoreError>
  /** A redelivery failed again: status `failed`, the error, attempts added, `lastFailedAt` now (inside {@link fenced}). */
  readonly failAgain: (
    subscriptionId: string,
    id: bigint,
    failure: { readonly error: string; readonly attempts: number }
  ) => Effect.Effect<void, StoreError>
  /**
   * Runs `effect` in one transaction that ends by checking that `fence`
   * still holds the subscription's lease; if it does not, everything rolls
   * back and it fails with `LeaseLost`.
   */
  readonly fenced: <A, E, R>(
    subscriptionId: string,
    fence: Fence,
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | LeaseLost | StoreError, R>
  /** Every dead letter (of one subscription, or projection with its shards, when given), by subscription and id. */
  readonly list: (subscriptionId: Option.Option<string>) => Effect.Effect<ReadonlyArray<DeadLetter>, StoreError>
  /** Marks the selected `failed` dead letters for redelivery; returns how many it marked. */
  readonly retry: (selection: Selection) => Effect.Effect<number, StoreError>
  /** Deletes the selected dead letters (any status); returns how many it deleted. */
  readonly discard: (selection: Selection) => Effect.Effect<number, StoreError>
  /** Each subscription's dead letters by status (subscriptions without any are absent). */
  readonly counts: Effect.Effect<ReadonlyMap<string, Counts>, StoreError>
}

/**
 * The `DeadLetterStore` tag.
 *
 * @since 0.2.0
 * @category tags
 */
export const DeadLetterStore: Context.Tag<DeadLetterStore, DeadLetterStore> = Context.GenericTag<DeadLetterStore>(
  "@mire/core/DeadLetterStore"
)

/**
 * The in-memory `DeadLetterStore`, over the driver of `EventStore.layerMemory`
 * (`InMemory.layer` provides both): its writes commit and roll back with the
 * in-memory transaction they run in, and its fence is the lease of the
 * in-memory `LeaseStore`.
 *
 * @example
 * ```ts
 * import { DeadLetters, EventStore } from "@mire/core"
 * import { Effect, Layer, Option } from "effect"
 *
 * const layer = DeadLetters.layerMemory.pipe(Layer.provideMerge(EventStore.layerMemory))
 * const program = DeadLetters.list(Option.none()).pipe(Effect.provide(layer))
 * ```
 * @since 0.2.0
 * @category layers
 */
export const layerMemory: Layer.Layer<DeadLetterStore, never, Memory.Driver> = Layer.effect(
  DeadLetterStore,
  Effect.map(Memory.Driver, (driver) => MemoryDeadLetterStore.make(driver))
)

const idText = /^[1-9][0-9]{0,18}$/

/**
 * A dead letter's id from text (what an operator typed): a positive integer
 * that fits `int8`, else `InvalidInput`.
 *
 * @example
 * ```ts
 * import { DeadLetters } from "@mire/core"
 * import { Either } from "effect"
 *
 * assert.strictEqual(Either.getOrThrow(DeadLetters.parseId("42")), 42n)
 * assert.ok(Either.isLeft(DeadLetters.parseId("0")))
 * ```
 * @since 0.2.0
 * @category validation
 */
export const parseId = (text: string): Either.Either<bigint, InvalidInput> => {
  if (idText.test(text)) {
    const id = BigInt(text)
    if (id <= 9223372036854775807n) return Either.right(id)
  }
  return Either.left(new InvalidInput({ field: "id", reason: `${JSON.stringify(text)} is not a dead letter id (a positive integer)` }))
}

/**
 * What an operator selected: ids, or `all` of one subscription; exactly one
 * of the two, else `InvalidInput`.
 *
 * @example
 * ```ts
 * import { DeadLetters } from "@mire/core"
 * import { Either } from "effect"
 *
 * assert.deepStrictEqual(Either.getOrThrow(DeadLetters.selection({ ids: ["3", "4"] })), { _tag: "Ids", ids: [3n, 4n] })
 * assert.ok(Either.isLeft(DeadLetters.selection({ ids: [] })))
 * ```
 * @since 0.2.0
 * @category validation
 */
export const selection = (options: {
  readonly ids: ReadonlyArray<string>
  readonly all?: string | undefined
}): Either.Either<Selection, InvalidInput> => {
  if (options.all !== undefined) {
    if (options.ids.length > 0) {
      return Either.left(new InvalidInput({ field: "selection", reason: "give dead letter ids or --all <subscription>, not both" }))
    }
    return SubscriptionId.is(options.all)
      ? Either.right({ _tag: "All", subscriptionId: options.all })
      : Either.left(new InvalidInput({ field: "subscriptionId", reason: `must be 1-${SubscriptionId.maxLength} characters` }))
  }
  if (options.ids.length === 0) {
    return Either.left(new InvalidInput({ field: "selection", reason: "give dead letter ids or --all <subscription>" }))
  }
  return Either.map(Either.all(options.ids.map(parseId)), (ids): Selection => ({ _tag: "Ids", ids: [...new Set(ids)] }))
}

/** The longest error text a dead letter keeps. */
const maxError = 4000

/**
 * The text a dead letter keeps of an error or defect: `Tag: message` for an
 * error with a tag, its message, or its JSON; at most 4,000 characters.
 *
 * @example
 * ```ts
 * import { DeadLetters } from "@mire/core"
 *
 * assert.strictEqual(DeadLetters.errorText(new Error("boom")), "Error: boom")
 * assert.strictEqual(DeadLetters.errorText({ _tag: "Refused", reason: "x" }), 'Refused: {"_tag":"Refused","reason":"x"}')
 * ```
 * @since 0.2.0
 * @category decisions
 */
export const errorText = (error: unknown): string => {
  const tag = Predicate.hasProperty(error, "_tag") && typeof error._tag === "string" ? error._tag : undefined
  const message = Predicate.hasProperty(error, "message") && typeof error.message === "string" ? error.message : undefined
  const name = error instanceof Error ? error.name : undefined
  let text: string
  if (message !== undefined && message !== "") text = `${tag ?? name ?? "Error"}: ${message}`
  else if (typeof error === "string") text = error
  else {
    let json: string | undefined
    try {
      json = JSON.stringify(error, (_, v) => (typeof v === "bigint" ? v.toString() : v))
    } catch {
      json = undefined
    }
    text = tag === undefined ? (json ?? String(error)) : `${tag}: ${json ?? String(error)}`
  }
  return text.length > maxError ? `${text.slice(0, maxError - 1)}…` : text
}

/**
 * The dead letter of an event that kept failing.
 *
 * @since 0.2.0
 * @category decisions
 */
export const failed = (event: RecordedEvent, error: string, attempts: number): NewDeadLetter => ({
  globalPosition: event.globalPosition,
  streamId: event.streamId,
  streamVersion: event.streamVersion,
  eventType: event.eventType,
  error,
  attempts,
  status: "failed"
})

/**
 * The dead letter of an event parked because its stream has an earlier
 * dead letter.
 *
 * @since 0.2.0
 * @category decisions
 */
export const parked = (event: RecordedEvent): NewDeadLetter => ({
  globalPosition: event.globalPosition,
  streamId: event.streamId,
  streamVersion: event.streamVersion,
  eventType: event.eventType,
  error: `parked: ${event.streamId} has an earlier dead letter`,
  attempts: 0,
  status: "parked"
})

/**
 * Due dead letters as redeliveries: one run per stream, in version order,
 * the streams in the order they first appear. A run ends before its first
 * `failed` letter: a failed event waits for an operator's `retry` (or
 * `discard`), even when letters parked before it are due (after a replay,
 * a reset or a rebuild, an earlier event of the stream may be parked behind
 * a later failed one).
 *
 * @example
 * ```ts
 * import { DeadLetters } from "@mire/core"
 * import { Option } from "effect"
 *
 * const at = (streamId: string, streamVersion: number) => ({
 *   letter: { id: 1n, subscriptionId: "s", globalPosition: 1n, streamId, streamVersion, eventType: "t", error: "",
 *     attempts: 0, firstFailedAt: new Date(0), lastFailedAt: new Date(0), status: "retry" as const },
 *   event: Option.none()
 * })
 * const runs = DeadLetters.redeliveries([at("a", 3), at("b", 1), at("a", 2)])
 * assert.deepStrictEqual(runs.map((run) => run.map((d) => `${d.letter.streamId}@${d.letter.streamVersion}`)), [["a@2", "a@3"], ["b@1"]])
 * ```
 * @since 0.2.0
 * @category decisions
 */
export const redeliveries = (due: ReadonlyArray<Due>): ReadonlyArray<ReadonlyArray<Due>> => {
  const runs = new Map<string, Array<Due>>()
  for (const d of due) {
    const run = runs.get(d.letter.streamId)
    if (run === undefined) runs.set(d.letter.streamId, [d])
    else run.push(d)
  }
  return [...runs.values()].flatMap((run) => {
    run.sort((a, b) => a.letter.streamVersion - b.letter.streamVersion)
    const failed = run.findIndex((d) => d.letter.status === "failed")
    const due = failed === -1 ? run : run.slice(0, failed)
    return due.length === 0 ? [] : [due]
  })
}

/**
 * The streams whose every dead letter is in `due` (a page of at most `limit`
 * from {@link DeadLetterStore.due}) and due: once all of them are resolved,
 * the stream is no longer parked. Whole streams come first, so only the last
 * stream of a full page may have more; a stream with a `failed` letter stays.
 *
 * @example
 * ```ts
 * import { DeadLetters } from "@mire/core"
 * import { Option } from "effect"
 *
 * const at = (streamId: string, streamVersion: number, status: DeadLetters.Status) => ({
 *   letter: { id: 1n, subscriptionId: "s", globalPosition: 1n, streamId, streamVersion, eventType: "t", error: "",
 *     attempts: 0, firstFailedAt: new Date(0), lastFailedAt: new Date(0), status },
 *   event: Option.none()
 * })
 * const page = [at("a", 1, "retry"), at("b", 1, "parked"), at("b", 2, "failed"), at("c", 1, "parked")]
 * assert.deepStrictEqual([...DeadLetters.settled(page, 4)], ["a"])
 * assert.deepStrictEqual([...DeadLetters.settled(page, 5)], ["a", "c"])
 * ```
 * @since 0.2.0
 * @category decisions
 */
export const settled = (due: ReadonlyArray<Due>, limit: number): ReadonlySet<string> => {
  const result = new Set<string>()
  const failed = new Set<string>()
  for (const d of due) {
    if (d.letter.status === "failed") failed.add(d.letter.streamId)
    else result.add(d.letter.streamId)
  }
  for (const streamId of failed) result.delete(streamId)
  const last = due[due.length - 1]
  if (last !== undefined && due.length >= limit) result.delete(last.letter.streamId)
  return result
}

/**
 * The error a dead letter records when its event is no longer in the log
 * (its stream was deleted, or truncated past it): the letter turns `failed`
 * and its stream stays parked until an operator discards it.
 *
 * @since 0.2.0
 * @category decisions
 */
export const eventGone = (letter: Pick<DeadLetter, "globalPosition" | "streamId" | "streamVersion">): string =>
  `EventGone: ${letter.streamId} v${letter.streamVersion} (position ${letter.globalPosition}) is no longer in the log ` +
  `(its stream was deleted or truncated): nothing to redeliver; discard this dead letter to release the events parked behind it`

/**
 * Whether a stored subscription id is selected by `subscriptionId`: the same
 * id, or one of the shards (`<subscriptionId>#<k>of<K>`) of the partitioned
 * projection of that id.
 *
 * @example
 * ```ts
 * import { DeadLetters } from "@mire/core"
 *
 * assert.strictEqual(DeadLetters.covers("totals", "totals#2of4"), true)
 * assert.strictEqual(DeadLetters.covers("totals", "totals#x"), false)
 * ```
 * @since 0.2.0
 * @category decisions
 */
export const covers = (subscriptionId: string, storedId: string): boolean =>
  storedId === subscriptionId || Option.isSome(Partition.parse(subscriptionId, storedId))

/**
 * Dead letters counted by status, per subscription.
 *
 * @since 0.2.0
 * @category decisions
 */
export const countsOf = (letters: ReadonlyArray<Pick<DeadLetter, "subscriptionId" | "status">>): ReadonlyMap<string, Counts> => {
  const result = new Map<string, Counts>()
  for (const { subscriptionId, status } of letters) {
    const counts = result.get(subscriptionId) ?? noCounts
    result.set(subscriptionId, { ...counts, [status]: counts[status] + 1 })
  }
  return result
}

/**
 * Every dead letter (of one subscription when given: of a partitioned
 * projection's id, of its shards too).
 *
 * @since 0.2.0
 * @category operations
 */
export const list = (
  subscriptionId: Option.Option<string>
): Effect.Effect<ReadonlyArray<DeadLetter>, StoreError | InvalidInput, DeadLetterStore> =>
  Effect.gen(function* () {
    if (subscriptionId._tag === "Some") yield* SubscriptionId.validate(subscriptionId.value)
    return yield* (yield* DeadLetterStore).list(subscriptionId)
  })

/**
 * Marks `failed` dead letters for redelivery: the projection's leader
 * handles them at its next batch boundary (success removes them, failure
 * records the attempts and the error again). `All` of a partitioned
 * projection's id covers its shards. Returns how many it marked.
 *
 * @example
 * ```ts
 * import { DeadLetters, InMemory } from "@mire/core"
 * import { Effect } from "effect"
 *
 * const program = DeadLetters.retry({ _tag: "All", subscriptionId: "balances" })
 * Effect.runPromise(program.pipe(Effect.provide(InMemory.layer))).then((n) => assert.strictEqual(n, 0))
 * ```
 * @since 0.2.0
 * @category operations
 */
export const retry = (selected: Selection): Effect.Effect<number, StoreError | InvalidInput, DeadLetterStore> =>
  Effect.flatMap(validSelection(selected), (s) => Effect.flatMap(DeadLetterStore, (store) => store.retry(s)))

/**
 * Deletes dead letters; the events parked behind a discarded one are
 * redelivered at the leader's next batch boundary. Returns how many it
 * deleted.
 *
 * @since 0.2.0
 * @category operations
 */
export const discard = (selected: Selection): Effect.Effect<number, StoreError | InvalidInput, DeadLetterStore> =>
  Effect.flatMap(validSelection(selected), (s) => Effect.flatMap(DeadLetterStore, (store) => store.discard(s)))

/**
 * Each subscription's dead letters by status.
 *
 * @since 0.2.0
 * @category operations
 */
export const counts: Effect.Effect<ReadonlyMap<string, Counts>, StoreError, DeadLetterStore> = Effect.flatMap(
  DeadLetterStore,
  (store) => store.counts
)

const validSelection = (s: Selection): Effect.Effect<Selection, InvalidInput> => {
  if (s._tag === "All") return Effect.as(SubscriptionId.validate(s.subscriptionId), s)
  if (s.ids.length === 0) return Effect.fail(new InvalidInput({ field: "selection", reason: "no dead letter ids given" }))
  const bad = s.ids.find((id) => id < 1n || id > 9223372036854775807n)
  return bad === undefined
    ? Effect.succeed(s)
    : Effect.fail(new InvalidInput({ field: "id", reason: `${bad} is not a dead letter id (a positive integer)` }))
}
