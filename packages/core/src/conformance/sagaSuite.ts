/**
 * Sagas, run against every store: order fulfilment (reserve stock → charge
 * payment → ship), with responders as projections.
 *
 * @since 0.1.0
 */
import { assert, describe, layer } from "@effect/vitest"
import type * as Duration from "effect/Duration"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Aggregate from "../Aggregate.js"
import * as Cursor from "../Cursor.js"
import * as EventStore from "../EventStore.js"
import { StoreError } from "../EventStoreError.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import * as Projection from "../Projection.js"
import * as ProjectionRunner from "../ProjectionRunner.js"
import * as Saga from "../Saga.js"
import * as SagaRunner from "../SagaRunner.js"
import * as SagaStore from "../SagaStore.js"
import * as Checkpoint from "../Checkpoint.js"
import type * as LeaseStore from "../LeaseStore.js"
import * as SubscriptionStore from "../SubscriptionStore.js"
import { unique } from "./fixtures.js"
import { waitUntil } from "./scopes.js"

/**
 * The history of a fulfilment instance that completed every step: the steps
 * and their outcomes, in order.
 *
 * @since 0.1.0
 * @category helpers
 */
export const completedHistory: ReadonlyArray<string> = [
  "reserve-stock:completed",
  "charge-payment:awaiting",
  "charge-payment:completed",
  "ship:awaiting",
  "ship:completed"
]

type Env = EventStore.EventStore | SubscriptionStore.SubscriptionStore | LeaseStore.LeaseStore | SagaStore.SagaStore

const Placed = Schema.TaggedStruct("Placed", { sku: Schema.String, amount: Schema.Number })
const Reserved = Schema.TaggedStruct("Reserved", { order: Schema.String })
const Released = Schema.TaggedStruct("Released", { order: Schema.String })
const ChargeRequested = Schema.TaggedStruct("ChargeRequested", { order: Schema.String, amount: Schema.Number })
const Charged = Schema.TaggedStruct("Charged", { order: Schema.String })
const Declined = Schema.TaggedStruct("Declined", { order: Schema.String, reason: Schema.String })
const Refunded = Schema.TaggedStruct("Refunded", { order: Schema.String })
const ShipmentRequested = Schema.TaggedStruct("ShipmentRequested", { order: Schema.String })
const Shipped = Schema.TaggedStruct("Shipped", { order: Schema.String })

const FulfilmentState = Schema.Struct({ order: Schema.String, sku: Schema.String, amount: Schema.Number, charged: Schema.Boolean })

/**
 * A fulfilment world in fresh categories: aggregates, the saga and its responders.
 *
 * @since 0.1.0
 * @category helpers
 */
export const world = (
  options: {
    readonly shipTimeout?: Duration.DurationInput
    readonly slowStep?: number
    /** Runs at the start of every run of the reserve-stock step. */
    readonly onReserve?: Effect.Effect<void>
  } = {}
) => {
  const tag = unique("")
  const none = { initial: {}, apply: (s: {}) => s }
  const Order = Aggregate.make({ category: `order${tag}`, events: Placed, ...none })
  const Stock = Aggregate.make({ category: `stock${tag}`, events: Schema.Union(Reserved, Released), ...none })
  const Payment = Aggregate.make({
    category: `payment${tag}`,
    events: Schema.Union(ChargeRequested, Charged, Declined, Refunded),
    ...none
  })
  const Shipping = Aggregate.make({ category: `shipping${tag}`, events: Schema.Union(ShipmentRequested, Shipped), ...none })
  const slow = options.slowStep === undefined ? Effect.void : Effect.sleep(`${options.slowStep} millis`)

  const reserve = Saga.step<typeof FulfilmentState.Type, typeof Placed.Type>("reserve-stock", {
    run: (state) =>
      Effect.zipRight(
        Effect.zipRight(options.onReserve ?? Effect.void, slow),
        Effect.map(Saga.emit(Stock, state.sku, Reserved.make({ order: state.order })), (e) => ({
          emit: [e],
          outbox: [{ topic: "stock.reserved", payload: { order: state.order } }]
        }))
      ),
    compensate: (state) =>
      Effect.map(Saga.emit(Stock, state.sku, Released.make({ order: state.order })), (e) => ({
        emit: [e],
        outbox: [{ topic: "stock.released", payload: { order: state.order } }]
      }))
  })
  const charge = Saga.step<typeof FulfilmentState.Type, typeof Placed.Type>("charge-payment", {
    run: (state) =>
      Effect.zipRight(
        slow,
        Effect.map(Saga.emit(Payment, state.order, ChargeRequested.make({ order: state.order, amount: state.amount })), (e) => ({
          emit: [e],
          state: { ...state, charged: true }
        }))
      ),
    compensate: (state) => Effect.map(Saga.emit(Payment, state.order, Refunded.make({ order: state.order })), (e) => ({ emit: [e] })),
    awaits: Saga.awaitEvent(Payment, { timeout: "30 seconds", only: ["Charged", "Declined"] })
  })
  const ship = Saga.step<typeof FulfilmentState.Type, typeof Placed.Type>("ship", {
    run: (state, input) =>
      Effect.zipRight(
        slow,
        Effect.map(Saga.emit(Shipping, state.order, ShipmentRequested.make({ order: state.order })), (e) => ({
          emit: [e],
          outbox: [{ topic: "shipping.label", payload: { order: state.order, after: input._tag === "Response" ? input.eventType : "none" } }]
        }))
      ),
    awaits: Saga.awaitEvent(Shipping, { timeout: options.shipTimeout ?? "30 seconds", only: ["Shipped"] })
  })
  const fulfilment = Saga.make({
    name: `fulfilment${tag}`,
    state: FulfilmentState,
    startOn: {
      aggregate: Order,
      start: (event, recorded) =>
        Option.some({
          instanceId: recorded.streamId,
          state: { order: recorded.streamId, sku: event.sku, amount: event.amount, charged: false }
        })
    },
    steps: [reserve, charge, ship]
  })
  // The payment service declines amounts over 100; the shipping service ships unless told not to.
  const paymentService = Projection.atLeastOnce({
    subscriptionId: `payments${tag}`,
    aggregate: Payment,
    handle: ({ event, recorded }) =>
      event._tag === "ChargeRequested"
        ? Effect.asVoid(
            Saga.reply(
              Payment,
              event.order,
              recorded.metadata.correlationId,
              event.amount > 100
                ? Either.left(Declined.make({ order: event.order, reason: "limit" }))
                : Either.right(Charged.make({ order: event.order }))
            )
          )
        : Effect.void
  })
  const shippingService = Projection.atLeastOnce({
    subscriptionId: `shipping${tag}`,
    aggregate: Shipping,
    handle: ({ event, recorded }) =>
      event._tag === "ShipmentRequested" && !event.order.includes("noship")
        ? Effect.asVoid(Saga.reply(Shipping, event.order, recorded.metadata.correlationId, Either.right(Shipped.make({ order: event.order }))))
        : Effect.void
  })
  const place = (id: string, amount: number) =>
    EventStore.append(`${Order.category}-${id}`, Order.category, ExpectedVersion.Any, [
      { eventType: `${Order.category}.placed`, schemaVersion: 1, data: { sku: "sku1", amount } }
    ])
  const countEvents = (aggregate: { readonly category: string }, eventType: string) =>
    EventStore.readCategory(aggregate.category).pipe(
      Stream.filter((e) => e.eventType === `${aggregate.category}.${eventType}`),
      Stream.runFold(new Map<string, number>(), (m, e) => {
        const order = String(e.data.order)
        m.set(order, (m.get(order) ?? 0) + 1)
        return m
      })
    )
  return { Order, Stock, Payment, Shipping, fulfilment, paymentService, shippingService, place, countEvents }
}

const projectionOptions: Omit<ProjectionRunner.Options, "workerId"> = {
  pollInterval: "50 millis",
  leaseTtl: "2 seconds",
  leaseRecheckInterval: "200 millis"
}

/**
 * An event store whose appends matching `matches` fail with a transient
 * `StoreError` `failures` times (then, if given, wait for `gate` before
 * succeeding): a database that cancels a statement, as seen by the caller.
 *
 * @since 0.1.0
 * @category helpers
 */
export const flakyAppends = (
  matches: (requests: ReadonlyArray<EventStore.AppendRequest>) => boolean,
  failures: number,
  gate?: Deferred.Deferred<void>
) =>
  Effect.map(EventStore.EventStore, (store): EventStore.EventStore => {
    let failed = 0
    return {
      ...store,
      appendMany: (requests) =>
        Effect.suspend(() => {
          if (!matches(requests)) return store.appendMany(requests)
          if (failed < failures) {
            failed++
            return Effect.fail(
              new StoreError({ kind: "Timeout", operation: "append", cause: "canceling statement due to user request" })
            )
          }
          return Effect.zipRight(gate === undefined ? Effect.void : Deferred.await(gate), store.appendMany(requests))
        })
    }
  })

/**
 * A saga worker (and the responders) in a scope of its own.
 *
 * @since 0.1.0
 * @category helpers
 */
export const startWorker = (
  w: ReturnType<typeof world>,
  workerId: string,
  publisher?: SagaRunner.Publisher<unknown>,
  timing: { readonly pollInterval: Duration.DurationInput; readonly projections: typeof projectionOptions } = {
    pollInterval: "200 millis",
    projections: projectionOptions
  },
  runner: {
    readonly claimTimeout?: Duration.DurationInput
    /** The event store the saga runner (only) sees. */
    readonly events?: EventStore.EventStore
  } = {}
) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const events = runner.events ?? (yield* EventStore.EventStore)
    const sagaRunner = yield* SagaRunner.run([w.fulfilment], {
      workerId,
      pollInterval: timing.pollInterval,
      projections: timing.projections,
      transitionRetry: Schedule.exponential("50 millis"),
      ...(runner.claimTimeout === undefined ? {} : { claimTimeout: runner.claimTimeout }),
      ...(publisher === undefined ? {} : { publisher, publishRetry: Schedule.spaced("20 millis") })
    }).pipe(Effect.provideService(EventStore.EventStore, events), Scope.extend(scope))
    yield* ProjectionRunner.run([w.paymentService, w.shippingService], { ...timing.projections, workerId }).pipe(
      Scope.extend(scope)
    )
    return { runner: sagaRunner, stop: Scope.close(scope, Exit.void) }
  })

const statuses = (w: ReturnType<typeof world>) =>
  Effect.map(SagaRunner.status(w.fulfilment), (all) => new Map(all.map((s) => [s.instanceId, s])))

/**
 * Waits until the persisted checkpoint of `subscriptionId` (a transactional
 * projection: written with what it handled) has nothing after it in
 * `categories`: everything appended so far was handled.
 */
const caughtUp = (subscriptionId: string, categories: ReadonlyArray<string>, what: string) =>
  Effect.flatMap(SubscriptionStore.SubscriptionStore, (subscriptions) =>
    waitUntil(
      Effect.flatMap(subscriptions.readCheckpoint(subscriptionId), (checkpoint) =>
        Option.isNone(checkpoint)
          ? Effect.succeed(false)
          : Effect.map(subscriptions.lag({ categories }, checkpoint.value.cursor), (lag) => lag.events === 0)
      ),
      what
    )
  )

/**
 * Registers the saga suite (order fulfilment with compensation, timeouts and responders);
 * `storeLayer` includes a `SagaStore`.
 *
 * @since 0.1.0
 * @category suites
 */
export const sagaSuite = (name: string, storeLayer: Layer.Layer<Env>) =>
  describe(`sagas: ${name}`, () => {
    layer(storeLayer, { timeout: "240 seconds", excludeTestServices: true })((it) => {
      it.effect("happy path: three steps, two awaited responses, completed", () =>
        Effect.gen(function* () {
          const store = yield* SagaStore.SagaStore
          const w = world()
          const worker = yield* startWorker(w, "w1")
          yield* w.place("o1", 50)
          const id = `${w.Order.category}-o1`
          yield* waitUntil(Effect.map(statuses(w), (m) => m.get(id)?.status === "completed"), "completion")
          const steps = (yield* store.history(w.fulfilment.name, id)).map((h) => `${h.step}:${h.outcome}`)
          assert.deepStrictEqual(steps, completedHistory)
          const [completed] = yield* SagaRunner.status(w.fulfilment, "completed")
          assert.strictEqual(completed!.instanceId, id)
          assert.strictEqual(completed!.currentStep, null)
          const emitted = yield* EventStore.readStream(`${w.Stock.category}-sku1`).pipe(Stream.runCollect)
          assert.strictEqual([...emitted][0]!.metadata.correlationId, Saga.stepCorrelationId(Saga.correlationId(w.fulfilment.name, id), 0))
          yield* worker.stop
        }))

      it.effect("an error response compensates the completed steps in reverse order; the instance fails", () =>
        Effect.gen(function* () {
          const store = yield* SagaStore.SagaStore
          const w = world()
          const worker = yield* startWorker(w, "w1")
          yield* w.place("big", 500)
          const id = `${w.Order.category}-big`
          yield* waitUntil(Effect.map(statuses(w), (m) => m.get(id)?.status === "failed"), "failure")
          const steps = (yield* store.history(w.fulfilment.name, id)).map((h) => `${h.step}:${h.outcome.split(":")[0]}`)
          assert.deepStrictEqual(steps, [
            "reserve-stock:completed",
            "charge-payment:awaiting",
            "charge-payment:error-response",
            "reserve-stock:compensated"
          ])
          const released = yield* w.countEvents(w.Stock, "released")
          assert.strictEqual(released.get(id), 1)
          // The compensation's message has a key of its own: it is not dropped as a duplicate of
          // the message the step sent at the same index.
          const messages = (yield* store.outbox).filter((m) => m.payload.order === id)
          assert.deepStrictEqual(messages.map((m) => m.topic).sort(), ["stock.released", "stock.reserved"])
          const status = (yield* statuses(w)).get(id)!
          assert.match(status.error ?? "", /error response/)
          yield* worker.stop
        }))

      it.effect("a timeout compensates in reverse order (a short real timeout)", () =>
        Effect.gen(function* () {
          const store = yield* SagaStore.SagaStore
          // Long enough that the waiting state is seen by a status read on a loaded machine.
          const w = world({ shipTimeout: "3 seconds" })
          const worker = yield* startWorker(w, "w1")
          yield* w.place("noship", 10)
          const id = `${w.Order.category}-noship`
          yield* waitUntil(Effect.map(statuses(w), (m) => m.get(id)?.status === "waiting" && m.get(id)?.currentStep === "ship"), "waiting on ship")
          yield* waitUntil(Effect.map(statuses(w), (m) => m.get(id)?.status === "failed"), "timeout", 15_000)
          const steps = (yield* store.history(w.fulfilment.name, id)).map((h) => `${h.step}:${h.outcome}`)
          assert.deepStrictEqual(steps.slice(-3), ["ship:timed-out", "charge-payment:compensated", "reserve-stock:compensated"])
          assert.strictEqual((yield* w.countEvents(w.Payment, "refunded")).get(id), 1)
          assert.strictEqual((yield* w.countEvents(w.Stock, "released")).get(id), 1)
          yield* worker.stop
        }))

      it.effect("a worker interrupted mid-run, then restarted: every instance completes, no emit duplicated", () =>
        Effect.gen(function* () {
          const w = world({ slowStep: 15 })
          const first = yield* startWorker(w, "w1")
          const ids = Array.from({ length: 20 }, (_, i) => `i${i}`)
          yield* Effect.forEach(ids, (id) => w.place(id, 10), { discard: true })
          yield* waitUntil(
            Effect.map(SagaRunner.status(w.fulfilment, "completed"), (done) => done.length >= 2),
            "some progress"
          )
          yield* first.stop
          const unfinished = (yield* SagaRunner.status(w.fulfilment)).filter((s) => s.status !== "completed")
          assert.isAbove(unfinished.length, 0, "the first worker stopped mid-run")
          const second = yield* startWorker(w, "w2")
          yield* waitUntil(
            Effect.map(statuses(w), (m) => ids.every((id) => m.get(`${w.Order.category}-${id}`)?.status === "completed")),
            "all 20 to complete",
            60_000
          )
          for (const [aggregate, type] of [
            [w.Stock, "reserved"],
            [w.Payment, "charge-requested"],
            [w.Shipping, "shipment-requested"]
          ] as const) {
            const counts = yield* w.countEvents(aggregate, type)
            for (const id of ids) assert.strictEqual(counts.get(`${w.Order.category}-${id}`), 1, `${type} of ${id}`)
          }
          yield* second.stop
        }), { timeout: 120_000 })

      it.effect("100 concurrent instances with two workers: all complete, each step once", () =>
        Effect.gen(function* () {
          const store = yield* SagaStore.SagaStore
          const w = world()
          const a = yield* startWorker(w, "wa")
          const b = yield* startWorker(w, "wb")
          const ids = Array.from({ length: 100 }, (_, i) => `c${i}`)
          yield* Effect.forEach(ids, (id) => w.place(id, 10), { concurrency: 10, discard: true })
          yield* waitUntil(
            Effect.map(SagaRunner.status(w.fulfilment, "completed"), (done) => done.length === 100),
            "100 completions",
            90_000
          )
          const workers = new Set<string>()
          for (const id of ids) {
            const history = yield* store.history(w.fulfilment.name, `${w.Order.category}-${id}`)
            const runs = history.filter((h) => h.outcome === "completed" || h.outcome === "awaiting")
            assert.deepStrictEqual(
              runs.map((h) => `${h.step}:${h.outcome}`),
              completedHistory
            )
            for (const h of history) workers.add(h.workerId)
          }
          assert.deepStrictEqual([...workers].sort(), ["wa", "wb"])
          yield* a.stop
          yield* b.stop
        }), { timeout: 150_000 })

      it.effect("the same start event delivered twice yields one instance", () =>
        Effect.gen(function* () {
          const subscriptions = yield* SubscriptionStore.SubscriptionStore
          const w = world()
          const worker = yield* startWorker(w, "w1")
          yield* w.place("dup", 10)
          const id = `${w.Order.category}-dup`
          yield* waitUntil(Effect.map(statuses(w), (m) => m.get(id)?.status === "completed"), "completion")
          // Redeliver: rewind the start subscription to the beginning, and place the order again.
          yield* subscriptions.writeCheckpoint(
            `saga-start:${w.fulfilment.name}`,
            Checkpoint.at(Cursor.start),
            Option.none()
          )
          yield* w.place("dup", 10)
          yield* waitUntil(
            Effect.map(subscriptions.readCheckpoint(`saga-start:${w.fulfilment.name}`), (cp) =>
              Option.isSome(cp) && !Cursor.isZero(cp.value.cursor)
            ),
            "the start projection to replay"
          )
          // Everything placed (the second start event included) was handled by the start projection.
          yield* caughtUp(`saga-start:${w.fulfilment.name}`, [w.Order.category], "the start projection to catch up")
          const all = yield* SagaRunner.status(w.fulfilment)
          assert.strictEqual(all.length, 1)
          assert.strictEqual((yield* w.countEvents(w.Stock, "reserved")).get(id), 1)
          yield* worker.stop
        }))

      it.effect("a response stored under a former type name at an older version is upcast for the next step", () =>
        Effect.gen(function* () {
          const tag = unique("")
          const Start = Schema.TaggedStruct("Begun", {})
          const Quoted = Schema.TaggedStruct("Quoted", { cents: Schema.Number, currency: Schema.String })
          const none = { initial: {}, apply: (s: {}) => s }
          const Job = Aggregate.make({ category: `job${tag}`, events: Start, ...none })
          const Quote = Aggregate.make({
            category: `quote${tag}`,
            events: Quoted,
            ...none,
            definitions: {
              Quoted: {
                version: 2,
                formerTypes: [`quote${tag}.priced`],
                upcasters: [(v1) => ({ cents: Number(v1.euros) * 100, currency: "EUR" })]
              }
            }
          })
          const State = Schema.Struct({ quote: Schema.String })
          const saga = Saga.make({
            name: `quoting${tag}`,
            state: State,
            startOn: { aggregate: Job, start: (_, recorded) => Option.some({ instanceId: recorded.streamId, state: { quote: "" } }) },
            steps: [
              Saga.step<typeof State.Type, typeof Start.Type>("ask", {
                run: () => Effect.succeed({}),
                awaits: Saga.awaitEvent(Quote, { timeout: "30 seconds" })
              }),
              Saga.step<typeof State.Type, typeof Start.Type>("record", {
                run: (_, input) =>
                  Effect.succeed({ state: { quote: input._tag === "Response" ? JSON.stringify(input.data) : "none" } })
              })
            ]
          })
          const scope = yield* Scope.make()
          yield* SagaRunner.run([saga], { workerId: "w1", pollInterval: "200 millis", projections: projectionOptions }).pipe(
            Scope.extend(scope)
          )
          yield* EventStore.append(`${Job.category}-j1`, Job.category, ExpectedVersion.Any, [
            { eventType: `${Job.category}.begun`, schemaVersion: 1, data: {} }
          ])
          const id = `${Job.category}-j1`
          yield* waitUntil(
            Effect.map(SagaRunner.status(saga, "waiting"), (w) => w.some((s) => s.instanceId === id)),
            "the instance to wait"
          )
          // An older service answers with the former type name, at schema version 1.
          yield* EventStore.append(`${Quote.category}-q1`, Quote.category, ExpectedVersion.Any, [
            {
              eventType: `quote${tag}.priced`,
              schemaVersion: 1,
              data: { euros: 12 },
              metadata: { correlationId: Saga.correlationId(saga.name, id) }
            }
          ])
          yield* waitUntil(
            Effect.map(SagaRunner.status(saga, "completed"), (done) => done.some((s) => s.instanceId === id)),
            "completion"
          )
          const store = yield* SagaStore.SagaStore
          const [row] = (yield* store.list(saga.name)).filter((r) => r.instanceId === id)
          assert.deepStrictEqual(row!.state, { quote: JSON.stringify({ cents: 1200, currency: "EUR" }) })
          yield* Scope.close(scope, Exit.void)
        }))

      it.effect("a saga's state is what jsonb keeps: the next step reads keys in jsonb's order, -0 as 0, on every store", () =>
        Effect.gen(function* () {
          const tag = unique("")
          const Start = Schema.TaggedStruct("Begun", {})
          const none = { initial: {}, apply: (s: {}) => s }
          const Job = Aggregate.make({ category: `job${tag}`, events: Start, ...none })
          // Encoded keys in non-jsonb order (jsonb sorts by length, then bytewise), a -0, a 1.0, nested objects.
          const State = Schema.Struct({
            zz: Schema.Number,
            a: Schema.Number,
            nested: Schema.Struct({ yy: Schema.Number, b: Schema.Array(Schema.Number) }),
            raw: Schema.Unknown
          })
          type S = typeof State.Type
          const written: S = {
            zz: 1.0,
            a: -0,
            nested: { yy: 2, b: [1.5, -0] },
            raw: { ccc: 1, bb: { d: -0, c: [{ z: 1, y: 2 }] }, é: 1e21, a: null }
          }
          const seen: Array<S> = []
          const saga = Saga.make({
            name: `jsonb${tag}`,
            state: State,
            startOn: {
              aggregate: Job,
              start: (_, recorded) =>
                Option.some({ instanceId: recorded.streamId, state: { zz: 0, a: 0, nested: { yy: 0, b: [] }, raw: null } })
            },
            steps: [
              Saga.step<S, typeof Start.Type>("write", { run: () => Effect.succeed({ state: written }) }),
              Saga.step<S, typeof Start.Type>("read", { run: (state) => Effect.as(Effect.sync(() => seen.push(state)), {}) })
            ]
          })
          const scope = yield* Scope.make()
          yield* SagaRunner.run([saga], { workerId: "w1", pollInterval: "200 millis", projections: projectionOptions }).pipe(
            Scope.extend(scope)
          )
          const id = `${Job.category}-j1`
          yield* EventStore.append(id, Job.category, ExpectedVersion.Any, [{ eventType: `${Job.category}.begun`, schemaVersion: 1, data: {} }])
          yield* waitUntil(
            Effect.map(SagaRunner.status(saga, "completed"), (done) => done.some((s) => s.instanceId === id)),
            "completion"
          )
          yield* Scope.close(scope, Exit.void)
          const expected = {
            a: 0,
            zz: 1,
            raw: { a: null, bb: { c: [{ y: 2, z: 1 }], d: 0 }, é: 1e21, ccc: 1 },
            nested: { b: [1.5, 0], yy: 2 }
          }
          // The next step read the state after a jsonb round trip (deep equality tells -0 from 0, at any depth);
          // the undecoded part keeps jsonb's key order (by length, then bytewise) at every level.
          const read = seen.at(-1)
          assert.deepStrictEqual(read, expected)
          assert.strictEqual(JSON.stringify(read?.raw), `{"a":null,"bb":{"c":[{"y":2,"z":1}],"d":0},"é":1e+21,"ccc":1}`)
          // And the stored row holds exactly that, keys in jsonb's order at every level.
          const store = yield* SagaStore.SagaStore
          const [row] = (yield* store.list(saga.name)).filter((r) => r.instanceId === id)
          assert.deepStrictEqual(row?.state, expected)
          assert.strictEqual(
            JSON.stringify(row?.state),
            `{"a":0,"zz":1,"raw":{"a":null,"bb":{"c":[{"y":2,"z":1}],"d":0},"é":1e+21,"ccc":1},"nested":{"b":[1.5,0],"yy":2}}`
          )
        }))

      it.effect("a repeated reply to an earlier step does not complete a later step awaiting the same events", () =>
        Effect.gen(function* () {
          const tag = unique("")
          const Start = Schema.TaggedStruct("Begun", {})
          const Quoted = Schema.TaggedStruct("Quoted", { cents: Schema.Number })
          const none = { initial: {}, apply: (s: {}) => s }
          const Job = Aggregate.make({ category: `job${tag}`, events: Start, ...none })
          const Quote = Aggregate.make({ category: `quote${tag}`, events: Quoted, ...none })
          const State = Schema.Struct({ quotes: Schema.Array(Schema.Number) })
          type S = typeof State.Type
          const ask = (name: string) =>
            Saga.step<S, typeof Start.Type>(name, {
              run: (state, input) =>
                Effect.map(
                  Saga.emit(Quote, "request", Quoted.make({ cents: 0 })),
                  (e) => ({
                    emit: [e],
                    state: { quotes: input._tag === "Response" ? [...state.quotes, Number(input.data.cents)] : state.quotes }
                  })
                ),
              awaits: Saga.awaitEvent(Quote, { timeout: "30 seconds" })
            })
          const saga = Saga.make({
            name: `twice${tag}`,
            state: State,
            startOn: { aggregate: Job, start: (_, recorded) => Option.some({ instanceId: recorded.streamId, state: { quotes: [] } }) },
            steps: [ask("first"), ask("second")]
          })
          const scope = yield* Scope.make()
          yield* SagaRunner.run([saga], { workerId: "w1", pollInterval: "200 millis", projections: projectionOptions }).pipe(
            Scope.extend(scope)
          )
          const id = `${Job.category}-j1`
          const correlation = Saga.correlationId(saga.name, id)
          const reply = (step: number, cents: number) =>
            Saga.reply(Quote, "reply", Saga.stepCorrelationId(correlation, step), Either.right(Quoted.make({ cents })))
          const waitingOn = (step: string) =>
            waitUntil(
              Effect.map(SagaRunner.status(saga, "waiting"), (w) => w.some((s) => s.instanceId === id && s.currentStep === step)),
              `waiting on ${step}`
            )
          yield* EventStore.append(id, Job.category, ExpectedVersion.Any, [{ eventType: `${Job.category}.begun`, schemaVersion: 1, data: {} }])
          yield* waitingOn("first")
          yield* reply(0, 100)
          yield* waitingOn("second")
          // The first step's reply again (a retry, a redelivery): the second step must keep waiting.
          yield* reply(0, 100)
          // The response projection handled it (and everything before it): the instance must still wait.
          yield* caughtUp(`saga-responses:${saga.name}`, [Quote.category], "the response projection to catch up")
          assert.isTrue((yield* SagaRunner.status(saga, "waiting")).some((s) => s.instanceId === id && s.currentStep === "second"))
          yield* reply(1, 250)
          yield* waitUntil(
            Effect.map(SagaRunner.status(saga, "completed"), (done) => done.some((s) => s.instanceId === id)),
            "completion"
          )
          yield* Scope.close(scope, Exit.void)
        }))

      it.effect("a StoreError writing a step's outcome is retried: the write is redone, the saga completes, nothing compensates", () =>
        Effect.gen(function* () {
          const store = yield* SagaStore.SagaStore
          const w = world()
          // The step's append is cancelled once, as Postgres does with SQLSTATE 57014.
          const events = yield* flakyAppends((requests) => requests.some((r) => r.category === w.Stock.category), 1)
          const worker = yield* startWorker(w, "w1", undefined, undefined, { events })
          yield* w.place("flaky", 10)
          const id = `${w.Order.category}-flaky`
          yield* waitUntil(Effect.map(statuses(w), (m) => m.get(id)?.status === "completed"), "completion")
          const steps = (yield* store.history(w.fulfilment.name, id)).map((h) => `${h.step}:${h.outcome}`)
          assert.deepStrictEqual(steps, completedHistory)
          assert.strictEqual((yield* w.countEvents(w.Stock, "reserved")).get(id), 1)
          const status = (yield* statuses(w)).get(id)!
          assert.strictEqual(status.attempts, 0)
          assert.strictEqual(status.error, null)
          yield* worker.stop
        }))

      it.effect("a compensation whose emit fails transiently is retried with backoff until it succeeds, shown in status, one history entry", () =>
        Effect.gen(function* () {
          const store = yield* SagaStore.SagaStore
          const w = world({ shipTimeout: "1 second" })
          const gate = yield* Deferred.make<void>()
          // The refund (charge-payment's compensation) fails twice, then waits for the test to look at the status.
          const events = yield* flakyAppends(
            (requests) => requests.some((r) => r.events.some((e) => e.eventType === `${w.Payment.category}.refunded`)),
            2,
            gate
          )
          const worker = yield* startWorker(w, "w1", undefined, undefined, { events })
          yield* w.place("noship", 10)
          const id = `${w.Order.category}-noship`
          yield* waitUntil(
            Effect.map(statuses(w), (m) => m.get(id)?.status === "compensating" && m.get(id)?.attempts === 2),
            "two failed attempts in status",
            15_000
          )
          const retrying = (yield* statuses(w)).get(id)!
          assert.strictEqual(retrying.currentStep, "charge-payment")
          assert.match(retrying.lastError ?? "", /canceling statement/)
          yield* Deferred.succeed(gate, undefined)
          yield* waitUntil(Effect.map(statuses(w), (m) => m.get(id)?.status === "failed"), "compensation to finish", 15_000)
          const steps = (yield* store.history(w.fulfilment.name, id)).map((h) => `${h.step}:${h.outcome}`)
          assert.deepStrictEqual(steps, [
            "reserve-stock:completed",
            "charge-payment:awaiting",
            "charge-payment:completed",
            "ship:awaiting",
            "ship:timed-out",
            "charge-payment:compensated",
            "reserve-stock:compensated"
          ])
          assert.strictEqual((yield* w.countEvents(w.Payment, "refunded")).get(id), 1)
          assert.strictEqual((yield* w.countEvents(w.Stock, "released")).get(id), 1)
          const done = (yield* statuses(w)).get(id)!
          assert.strictEqual(done.attempts, 0)
          assert.match(done.error ?? "", /timed out/)
          yield* worker.stop
        }))

      it.effect("a step whose claim cannot be extended is taken over: it runs twice, its first outcome and emits are not written", () =>
        Effect.gen(function* () {
          const store = yield* SagaStore.SagaStore
          const gate = yield* Deferred.make<void>()
          let runs = 0
          // The first run of reserve-stock hangs until the test releases it; later runs go straight on.
          const w = world({ onReserve: Effect.suspend(() => (++runs === 1 ? Deferred.await(gate) : Effect.void)) })
          // The store as the worker sees it: the first claim's token is noted, and `fenced` completes
          // once a write under that token was refused (the first run's outcome, after the takeover).
          let firstToken: string | undefined
          const fenced = yield* Deferred.make<void>()
          const watched: SagaStore.SagaStore = {
            ...store,
            claimDue: (sagaName, now, token, until) =>
              Effect.tap(store.claimDue(sagaName, now, token, until), (claimed) =>
                Effect.sync(() => {
                  if (Option.isSome(claimed) && firstToken === undefined) firstToken = token
                })
              ),
            holdsClaim: (sagaName, instanceId, token, version) =>
              Effect.tap(store.holdsClaim(sagaName, instanceId, token, version), (holds) =>
                !holds && token === firstToken ? Deferred.succeed(fenced, undefined) : Effect.void
              ),
            // The first run's worker cannot reach the store to extend its claim (a partition), so it expires.
            extendClaim: (sagaName, instanceId, token, until, failure) =>
              token === firstToken
                ? Effect.fail(new StoreError({ kind: "Connection", operation: "sagaExtendClaim", cause: "partitioned" }))
                : store.extendClaim(sagaName, instanceId, token, until, failure)
          }
          // A claim outlives any single transition on a loaded machine, but not the hung first run.
          const worker = yield* startWorker(w, "w1", undefined, undefined, { claimTimeout: "2 seconds" }).pipe(
            Effect.provideService(SagaStore.SagaStore, watched)
          )
          yield* w.place("slow", 10)
          const id = `${w.Order.category}-slow`
          const history = Effect.map(store.history(w.fulfilment.name, id), (h) => h.map((e) => `${e.step}:${e.outcome}`))
          yield* waitUntil(
            Effect.map(history, (h) => h.includes("reserve-stock:completed")),
            "another run of the step to take over and complete",
            15_000
          )
          // The first run finishes now, after its claim was taken over: it must write nothing.
          yield* Deferred.succeed(gate, undefined)
          yield* waitUntil(Effect.map(statuses(w), (m) => m.get(id)?.status === "completed"), "completion")
          // The first run's write was attempted and refused by the fence.
          yield* waitUntil(Deferred.isDone(fenced), "the first run's write to be refused")
          assert.strictEqual(runs, 2)
          assert.deepStrictEqual(yield* history, completedHistory)
          assert.strictEqual((yield* w.countEvents(w.Stock, "reserved")).get(id), 1)
          yield* worker.stop
        }))

      it.effect("an outbox publisher failing twice then succeeding publishes once per idempotency key", () =>
        Effect.gen(function* () {
          const store = yield* SagaStore.SagaStore
          const w = world()
          const attempts = new Map<string, number>()
          const published = new Map<string, number>()
          const publisher: SagaRunner.Publisher<unknown> = (message) =>
            Effect.suspend(() => {
              const n = (attempts.get(message.idempotencyKey) ?? 0) + 1
              attempts.set(message.idempotencyKey, n)
              if (n <= 2) return Effect.fail("unavailable")
              published.set(message.idempotencyKey, (published.get(message.idempotencyKey) ?? 0) + 1)
              return Effect.void
            })
          const worker = yield* startWorker(w, "w1", publisher)
          yield* w.place("p1", 10)
          yield* w.place("p2", 10)
          const keys = [`${w.Order.category}-p1`, `${w.Order.category}-p2`].map(
            (id) => `${Saga.correlationId(w.fulfilment.name, id)}:ship:0`
          )
          yield* waitUntil(Effect.sync(() => keys.every((k) => published.get(k) === 1)), "both messages published")
          // Marked published (after publishing), so no worker claims them again.
          yield* waitUntil(
            Effect.map(store.outbox, (rows) => rows.filter((r) => keys.includes(r.idempotencyKey) && r.published).length === 2),
            "both messages marked published"
          )
          for (const key of keys) {
            assert.strictEqual(attempts.get(key), 3)
            assert.strictEqual(published.get(key), 1)
          }
          const rows = (yield* store.outbox).filter((r) => keys.includes(r.idempotencyKey))
          assert.strictEqual(rows.length, 2)
          assert.isTrue(rows.every((r) => r.published && r.attempts === 3))
          yield* worker.stop
        }))
    })
  })
