/**
 * A start or reset at a time or a position while a transaction is in
 * flight, run against every store: a transaction that took its id before
 * the located event's but commits after the lookup writes events below that
 * event's cursor; they are delivered all the same (the start is capped at
 * the commit-safe head).
 *
 * @since 0.2.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as EventStore from "../EventStore.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import * as LeaseStore from "../LeaseStore.js"
import type { NewEvent, RecordedEvent } from "../RecordedEvent.js"
import * as Subscription from "../Subscription.js"
import type * as SubscriptionStore from "../SubscriptionStore.js"
import { unique } from "./fixtures.js"
import { begin, collectUntil } from "./scopes.js"

const ev = (mark: string): NewEvent => ({ eventType: "inflight.marked", schemaVersion: 1, data: { mark } })

const firstOf = (streamId: string) =>
  Effect.map(Stream.runHead(EventStore.readStream(streamId, { from: 1, limit: 1 })), Option.getOrThrow)

const has = (got: ReadonlyArray<RecordedEvent>, streamId: string) => got.some((e) => e.streamId === streamId)

/**
 * The log: `old` commits; then T1 takes a transaction id and stays open;
 * `after` commits (a later id); the start is resolved (its point is `after`,
 * the lowest event visible at or after the time or position); then T1
 * appends `late` (recorded after the point, its cursor below `after`'s) and
 * commits. Returns the subscription's deliveries once `late` is among them.
 */
const startAcross = <R>(
  category: string,
  open: (point: { readonly old: RecordedEvent; readonly after: RecordedEvent }) => Effect.Effect<Subscription.Subscription, never, R>
) =>
  Effect.gen(function* () {
    const [oldId, afterId, lateId] = [`${category}-old`, `${category}-after`, `${category}-late`]
    yield* EventStore.append(oldId, category, ExpectedVersion.NoStream, [ev("old")])
    const old = yield* firstOf(oldId)
    // The in-flight transaction begins (and is recorded) after `old`: a sleep only guarantees time has passed.
    yield* Effect.sleep("20 millis")
    const t1 = yield* begin
    yield* EventStore.append(afterId, category, ExpectedVersion.NoStream, [ev("after")])
    const after = yield* firstOf(afterId)
    const sub = yield* open({ old, after })
    yield* t1.run(EventStore.append(lateId, category, ExpectedVersion.NoStream, [ev("late")]))
    yield* t1.commit
    const late = yield* firstOf(lateId)
    assert.isTrue(late.transactionId < after.transactionId && late.globalPosition > after.globalPosition, "late sorts below after")
    assert.isTrue(late.recordedAt.getTime() > old.recordedAt.getTime(), "late is recorded after old")
    return yield* collectUntil(sub, (got) => has(got, lateId) && has(got, afterId))
  })

/**
 * Registers the in-flight start suite.
 *
 * @since 0.2.0
 * @category suites
 */
export const startInFlightSuite = (
  name: string,
  storeLayer: Layer.Layer<EventStore.EventStore | SubscriptionStore.SubscriptionStore | LeaseStore.LeaseStore>
) =>
  describe(`start at a time or a position across an open transaction: ${name}`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.scoped("startFrom a time delivers an event recorded after it by a transaction open at the start", () =>
        Effect.gen(function* () {
          const category = unique("ift")
          const got = yield* startAcross(category, ({ old }) =>
            Subscription.make({
              subscriptionId: unique("ift-"),
              categories: [category],
              startFrom: { time: new Date(old.recordedAt.getTime() + 1) }
            }).pipe(Effect.orDie)
          )
          assert.isTrue(has(got, `${category}-late`) && has(got, `${category}-after`))
        }))

      it.scoped("startFrom a position delivers an event committed after it by a transaction open at the start", () =>
        Effect.gen(function* () {
          const category = unique("ifp")
          const got = yield* startAcross(category, ({ after }) =>
            Subscription.make({
              subscriptionId: unique("ifp-"),
              categories: [category],
              startFrom: { position: after.globalPosition }
            }).pipe(Effect.orDie)
          )
          assert.isTrue(has(got, `${category}-late`) && has(got, `${category}-after`))
        }))

      it.scoped("resetTo a time delivers an event recorded after it by a transaction open at the reset", () =>
        Effect.gen(function* () {
          const category = unique("ifr")
          const subscriptionId = unique("ifr-")
          const leases = yield* LeaseStore.LeaseStore
          // A subscription with a checkpoint and a lease (the reset forces it out).
          const first = yield* Subscription.make({ subscriptionId, categories: [category] })
          yield* first.checkpoint()
          const got = yield* startAcross(category, ({ old }) =>
            Effect.gen(function* () {
              yield* Effect.orDie(leases.acquire(subscriptionId, "ifr-worker", Duration.minutes(1)))
              yield* Subscription.resetTo(subscriptionId, { time: new Date(old.recordedAt.getTime() + 1) }, { force: true })
              return yield* Subscription.make({ subscriptionId, categories: [category] })
            }).pipe(Effect.orDie)
          )
          assert.isTrue(has(got, `${category}-late`) && has(got, `${category}-after`))
        }))
    })
  })
