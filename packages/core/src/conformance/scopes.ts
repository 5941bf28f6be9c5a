/**
 * Suite helpers: transactions held open on their own fiber (their own
 * connection on Postgres), driven step by step, so suites can build
 * interleavings of transaction ids and commits through the public API; and
 * polling with a real-time deadline.
 *
 * @since 0.1.0
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Cursor from "../Cursor.js"
import * as EventStore from "../EventStore.js"
import type { StoreError } from "../EventStoreError.js"
import type { RecordedEvent } from "../RecordedEvent.js"
import type * as Subscription from "../Subscription.js"
import * as SubscriptionStore from "../SubscriptionStore.js"

type Command = { readonly _tag: "Run"; readonly run: Effect.Effect<void> } | { readonly _tag: "End"; readonly commit: boolean }

/**
 * An open transaction that already holds its transaction id.
 *
 * @since 0.1.0
 * @category helpers
 */
export interface OpenScope {
  readonly run: <A, E>(effect: Effect.Effect<A, E, EventStore.EventStore>) => Effect.Effect<A, E>
  readonly commit: Effect.Effect<void>
  readonly rollback: Effect.Effect<void>
}

/**
 * Begins a transaction and forces its transaction id now
 * (`EventStore.currentTransactionId`).
 *
 * @since 0.1.0
 * @category helpers
 */
export const begin: Effect.Effect<OpenScope, never, EventStore.EventStore> = Effect.gen(function* () {
  const context = yield* Effect.context<EventStore.EventStore>()
  const commands = yield* Queue.unbounded<Command>()
  const ready = yield* Deferred.make<void>()
  const fiber = yield* Effect.forkDaemon(
    EventStore.transaction(
      Effect.gen(function* () {
        yield* EventStore.currentTransactionId
        yield* Deferred.succeed(ready, undefined)
        for (;;) {
          const command = yield* Queue.take(commands)
          if (command._tag === "End") {
            if (command.commit) return
            return yield* Effect.fail("rollback" as const)
          }
          yield* command.run
        }
      })
    )
  )
  yield* Deferred.await(ready)
  const end = (commit: boolean) =>
    Effect.zipRight(Queue.offer(commands, { _tag: "End", commit }), Effect.asVoid(Fiber.await(fiber)))
  return {
    run: <A, E>(effect: Effect.Effect<A, E, EventStore.EventStore>) =>
      Effect.gen(function* () {
        const done = yield* Deferred.make<A, E>()
        yield* Queue.offer(commands, {
          _tag: "Run",
          run: Effect.flatMap(Effect.exit(Effect.provide(effect, context)), (exit) => Deferred.done(done, exit))
        })
        return yield* Deferred.await(done)
      }),
    commit: end(true),
    rollback: end(false)
  }
})

/**
 * Polls until `pred` holds over everything delivered, or dies at the deadline.
 *
 * @since 0.1.0
 * @category helpers
 */
export const collectUntil = (
  sub: Subscription.Subscription,
  pred: (got: ReadonlyArray<RecordedEvent>) => boolean,
  deadlineMillis = 15_000
) =>
  Effect.gen(function* () {
    const got: Array<RecordedEvent> = []
    const start = Date.now()
    for (;;) {
      got.push(...(yield* sub.poll))
      if (pred(got)) return got
      if (Date.now() - start > deadlineMillis) {
        return yield* Effect.die(
          new Error(`timed out waiting for deliveries; got ${JSON.stringify(got.map((e) => [e.streamId, e.streamVersion]))}`)
        )
      }
      yield* Effect.sleep("25 millis")
    }
  })

/**
 * Each stream's versions appear strictly increasing.
 *
 * @since 0.1.0
 * @category helpers
 */
export const perStreamOrdered = (events: ReadonlyArray<RecordedEvent>): boolean => {
  const last = new Map<string, number>()
  for (const e of events) {
    const prev = last.get(e.streamId)
    if (prev !== undefined && e.streamVersion <= prev) return false
    last.set(e.streamId, e.streamVersion)
  }
  return true
}

/**
 * Polls `check` until it holds, or dies at the deadline (real time).
 *
 * @since 0.1.0
 * @category helpers
 */
export const waitUntil = <E, R>(check: Effect.Effect<boolean, E, R>, what: string, millis = 30_000) =>
  Effect.gen(function* () {
    const deadline = Date.now() + millis
    while (!(yield* check)) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
      yield* Effect.sleep("10 millis")
    }
  })

/**
 * Waits until every event committed so far lies at or below the commit-safe
 * head, so that a poll reads them all. On Postgres a transaction open anywhere
 * on the server (another test's, in another database) holds the head back
 * from events committed after it took its id; a test that asserts what one
 * poll returns waits for this first.
 *
 * @since 0.2.0
 * @category helpers
 */
export const untilCommitSafe: Effect.Effect<void, StoreError, SubscriptionStore.SubscriptionStore> = Effect.gen(function* () {
  const store = yield* SubscriptionStore.SubscriptionStore
  const last = yield* store.locate("last")
  if (Option.isNone(last)) return
  yield* waitUntil(
    Effect.map(store.locate("head"), (head) => Option.exists(head, (h) => Cursor.order(h, last.value) >= 0)),
    "the commit-safe head to reach the last committed event"
  )
})
