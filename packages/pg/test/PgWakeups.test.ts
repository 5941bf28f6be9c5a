/**
 * Wake-ups survive other subscriptions closing and the loss of the listening
 * connection (issue 11, item 6). Every subscription here polls only every
 * 20 s, so a delivery within 2 s can only come from a wake-up.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Subscription from "@mire/core/Subscription"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as PgStore from "../src/PgStore.js"
import * as PgWakeups from "../src/PgWakeups.js"
import { migratedLayer } from "./utils.js"

const ev = { eventType: "wake.e", schemaVersion: 1, data: {} }
const slow = "20 seconds"

/** Succeeds once `seen` holds `streamId`; fails with a timeout after `within`. */
const awaitSeen = (seen: Ref.Ref<ReadonlyArray<string>>, streamId: string, within: Duration.DurationInput) =>
  Ref.get(seen).pipe(
    Effect.filterOrFail(
      (s) => s.includes(streamId),
      () => `not delivered yet: ${streamId}`
    ),
    Effect.retry(Schedule.spaced("10 millis")),
    Effect.timeoutFail({ duration: within, onTimeout: () => `${streamId} was not delivered within ${Duration.format(within)}` })
  )

/** Opens a subscription on `category` (polling every 20 s) and records the streams it delivers. */
const consume = (subscriptionId: string, category: string) =>
  Effect.gen(function* () {
    const sub = yield* Subscription.make({ subscriptionId, categories: [category], pollInterval: slow })
    const seen = yield* Ref.make<ReadonlyArray<string>>([])
    yield* sub.batches.pipe(
      Stream.runForEach((batch) => Ref.update(seen, (s) => [...s, ...batch.map((e) => e.streamId)])),
      Effect.forkScoped
    )
    return seen
  })

/** Appends one event to a new stream. */
type Append = (streamId: string) => Effect.Effect<unknown, EventStore.AppendError, EventStore.EventStore>

/**
 * Appends to fresh streams `<prefix>-0`, `<prefix>-1`, … until one is delivered `within` its append, at
 * most `tries` times. A later try covers a wake whose poll found its event still behind the commit-safe
 * head (another test's transaction open on the server), which only the next wake or poll delivers.
 */
const deliveredOnWake = (
  seen: Ref.Ref<ReadonlyArray<string>>,
  prefix: string,
  options: {
    readonly within: Duration.DurationInput
    readonly tries: number
    readonly append: Append
  }
) =>
  Effect.gen(function* () {
    const n = yield* Ref.make(0)
    yield* Effect.gen(function* () {
      const streamId = `${prefix}-${yield* Ref.getAndUpdate(n, (i) => i + 1)}`
      yield* options.append(streamId)
      yield* awaitSeen(seen, streamId, options.within)
    }).pipe(Effect.retry(Schedule.recurs(options.tries - 1)))
  })

const appendTo =
  (category: string): Append =>
  (streamId) => EventStore.append(streamId, category, ExpectedVersion.NoStream, [ev])

/** Until one append is delivered within 1 s (31 tries): the wake-ups are up. */
const warmUp = (seen: Ref.Ref<ReadonlyArray<string>>, category: string, append = appendTo(category)) =>
  deliveredOnWake(seen, `${category}-warm`, { within: "1 second", tries: 31, append })

/**
 * A wake-up delivers an append within 2 s, in one of 3 tries: 6 s at most, well inside the 20 s poll
 * interval, so a lost wake-up still fails.
 */
const woken = (seen: Ref.Ref<ReadonlyArray<string>>, prefix: string, append: Append) =>
  deliveredOnWake(seen, prefix, { within: "2 seconds", tries: 3, append })

const listenerBackends = (sql: SqlClient.SqlClient) =>
  sql<{ pid: number }>`
    SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = ${PgWakeups.applicationName}`

describe("PgWakeups", () => {
  layer(PgStore.layer.pipe(Layer.provideMerge(migratedLayer())), { timeout: "120 seconds", excludeTestServices: true })(
    (it) => {
      it.scoped("closing one of two subscriptions leaves the other woken promptly", () =>
        Effect.gen(function* () {
          const scopeA = yield* Scope.make()
          const seenA = yield* consume("wake-a", "wka").pipe(Scope.extend(scopeA))
          const seenB = yield* consume("wake-b", "wkb")
          yield* warmUp(seenA, "wka")
          yield* warmUp(seenB, "wkb")
          yield* Scope.close(scopeA, Exit.void)
          for (const i of [1, 2, 3]) yield* woken(seenB, `wkb-after-${i}`, appendTo("wkb"))
        }))

      it.scoped("wake-ups are fanned out in-process: publish wakes a subscriber without a notification", () =>
        Effect.gen(function* () {
          const wakeups = yield* PgWakeups.make({ channels: ["mire_test_local"], applicationName: "mire-test-local" })
          const got = yield* Ref.make<ReadonlyArray<string>>([])
          yield* wakeups.subscribe("mire_test_local", (category) => category !== "skipped").pipe(
            Stream.runForEach((payload) => Ref.update(got, (s) => [...s, payload])),
            Effect.forkScoped
          )
          // The subscriber is up once the (re)connect wake "" has arrived or a publish gets through.
          yield* wakeups.publish("mire_test_local", "probe").pipe(
            Effect.zipRight(awaitSeen(got, "probe", "200 millis")),
            Effect.retry(Schedule.recurs(50))
          )
          yield* wakeups.publish("mire_test_local", "skipped")
          yield* wakeups.publish("mire_test_local", "account")
          yield* awaitSeen(got, "account", "2 seconds")
          assert.isFalse((yield* Ref.get(got)).includes("skipped"))
        }))
    }
  )

  layer(migratedLayer(), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.scoped("terminating the listening connection: one warning, and wake-ups are back within 2 s", () => {
      const warnings: Array<string> = []
      const capture = Logger.make(({ logLevel, message }) => {
        if (LogLevel.greaterThanEqual(logLevel, LogLevel.Warning)) warnings.push(String(message))
      })
      return Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const context = yield* Layer.build(PgStore.layer)
        // A second store layer stands for another process: its appends reach this one's
        // subscription only through PostgreSQL's NOTIFY and this layer's listener, never
        // through the in-process fan-out.
        const writer = yield* Layer.build(PgStore.layer)
        const appendElsewhere = (streamId: string) =>
          EventStore.append(streamId, "wkt", ExpectedVersion.NoStream, [ev]).pipe(Effect.provide(writer))
        yield* Effect.gen(function* () {
          const seen = yield* consume("wake-t", "wkt")
          yield* warmUp(seen, "wkt", appendElsewhere)
          // One listening connection per store layer (subscriptions and sagas share it): two layers, two.
          const backends = yield* listenerBackends(sql)
          assert.strictEqual(backends.length, 2)
          for (const backend of backends) yield* sql`SELECT pg_terminate_backend(${backend.pid})`
          // Committed elsewhere while the listeners are down: delivered by the wake after reconnecting.
          yield* appendElsewhere("wkt-during")
          yield* awaitSeen(seen, "wkt-during", "2 seconds")
          for (const i of [1, 2, 3]) yield* woken(seen, `wkt-after-${i}`, appendElsewhere)
          assert.isTrue(
            warnings.some((w) => w.includes("listener")),
            `a warning names the listener: ${JSON.stringify(warnings)}`
          )
          const old = new Set(backends.map((b) => b.pid))
          const after = yield* listenerBackends(sql)
          assert.strictEqual(after.length, 2)
          assert.isTrue(after.every((b) => !old.has(b.pid)), "both listeners reconnected on new connections")
        }).pipe(Effect.provide(context))
      }).pipe(Effect.provide(Logger.add(capture)))
    })
  })
})
