/**
 * # Pattern: Sagas (process managers) (`saga`)
 *
 * **Why this pattern exists.** Some business processes span several
 * aggregates and services, and take time. Fulfilling an order reserves stock
 * (the warehouse), charges the card (a payment provider), then ships (a
 * carrier). One big transaction around all of it is not merely slow, it is
 * impossible: the payment provider is not in your database, its answer comes
 * later, and a later step can fail after earlier ones have committed. A saga
 * runs the process as a sequence of steps instead, and has to:
 *
 * - **survive crashes**: every transition is stored, so a restarted worker
 *   carries on where the last one stopped, and never emits anything twice;
 * - **wait for replies**: a step sends a request, and the instance waits in
 *   the database (not in memory) until the correlated response arrives;
 * - **time out**: a reply that never comes fails the step at a stored
 *   deadline, which survives restarts too;
 * - **undo completed work**: when a step fails, the compensations of the
 *   steps already completed run in reverse order. Here a declined card
 *   releases the stock reserved for the order.
 *
 * The saga below starts on an order's `Placed` event, one instance per order,
 * and runs three steps:
 *
 * 1. `reserve-stock` emits `Reserved` on the stock stream; its compensation
 *    emits `Released`.
 * 2. `charge-payment` emits `ChargeRequested` and awaits the payment
 *    service's `Charged` (a success) or `Declined` (an error response).
 * 3. `ship` emits `ShipmentRequested`, queues an outbox message for the
 *    warehouse, and awaits `Shipped`.
 *
 * The payment and shipping services stand in for other systems: projections
 * that answer requests with `Saga.reply`. Two orders go in, one within the
 * card limit and one over it: the first completes, the second fails and its
 * stock goes back on the shelf.
 *
 * Run: `npm run example -- saga`
 *
 * @since 0.1.0
 */
import { Aggregate, AggregateRoot, EventStore, Projection, ProjectionRunner, Saga, SagaRunner, SagaStore } from "@mire/core"
import { Console, Duration, Effect, Either, HashSet, Option, Ref, Schedule, Schema, Stream } from "effect"

/**
 * @since 0.1.0
 * @category events
 */
export const Placed = Schema.TaggedStruct("Placed", {
  sku: Schema.String,
  quantity: Schema.Int.pipe(Schema.positive()),
  amount: Schema.Int.pipe(Schema.positive())
})
/**
 * @since 0.1.0
 * @category events
 */
export type Placed = typeof Placed.Type

/**
 * @since 0.1.0
 * @category events
 */
export const Reserved = Schema.TaggedStruct("Reserved", { order: Schema.String, quantity: Schema.Int })
/**
 * @since 0.1.0
 * @category events
 */
export const Released = Schema.TaggedStruct("Released", { order: Schema.String, quantity: Schema.Int })

/**
 * @since 0.1.0
 * @category events
 */
export const ChargeRequested = Schema.TaggedStruct("ChargeRequested", { order: Schema.String, amount: Schema.Int })
/**
 * @since 0.1.0
 * @category events
 */
export const Charged = Schema.TaggedStruct("Charged", { order: Schema.String, chargeId: Schema.String })
/**
 * @since 0.1.0
 * @category events
 */
export const Declined = Schema.TaggedStruct("Declined", { order: Schema.String, reason: Schema.String })
/**
 * @since 0.1.0
 * @category events
 */
export const Refunded = Schema.TaggedStruct("Refunded", { order: Schema.String })

/**
 * @since 0.1.0
 * @category events
 */
export const ShipmentRequested = Schema.TaggedStruct("ShipmentRequested", {
  order: Schema.String,
  sku: Schema.String,
  quantity: Schema.Int
})
/**
 * @since 0.1.0
 * @category events
 */
export const Shipped = Schema.TaggedStruct("Shipped", { order: Schema.String, tracking: Schema.String })

/**
 * @since 0.1.0
 * @category models
 */
export interface Stock {
  /** Units reserved for orders and not yet released. */
  readonly reserved: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Payment {
  readonly status: "none" | "requested" | "charged" | "declined" | "refunded"
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Shipment {
  readonly tracking: string | null
}

const noOrder: Option.Option<Placed> = Option.none()
const noStock: Stock = { reserved: 0 }
const noPayment: Payment = { status: "none" }
const noShipment: Shipment = { tracking: null }

/**
 * The four aggregates: orders (`<order>`), stock (`<sku>`), payments and
 * shipments (`<order>`).
 *
 * The example takes fresh categories per run (a short random suffix), so
 * reruns on one database do not interfere. In production they are fixed.
 *
 * @since 0.1.0
 * @category aggregates
 */
export const makeAggregates = (suffix: string) => ({
  Order: Aggregate.make({
    category: `order_${suffix}`,
    events: Placed,
    initial: noOrder,
    apply: (_, event) => Option.some(event)
  }),
  Stock: Aggregate.make({
    category: `stock_${suffix}`,
    events: Schema.Union(Reserved, Released),
    initial: noStock,
    apply: (state, event): Stock => ({
      reserved: state.reserved + (event._tag === "Reserved" ? event.quantity : -event.quantity)
    })
  }),
  Payment: Aggregate.make({
    category: `payment_${suffix}`,
    events: Schema.Union(ChargeRequested, Charged, Declined, Refunded),
    initial: noPayment,
    apply: (_, event): Payment => {
      switch (event._tag) {
        case "ChargeRequested":
          return { status: "requested" }
        case "Charged":
          return { status: "charged" }
        case "Declined":
          return { status: "declined" }
        case "Refunded":
          return { status: "refunded" }
      }
    }
  }),
  Shipping: Aggregate.make({
    category: `shipping_${suffix}`,
    events: Schema.Union(ShipmentRequested, Shipped),
    initial: noShipment,
    apply: (state, event): Shipment => (event._tag === "Shipped" ? { tracking: event.tracking } : state)
  })
})

/**
 * @since 0.1.0
 * @category aggregates
 */
export type Aggregates = ReturnType<typeof makeAggregates>

/**
 * The saga's own state, stored (encoded with this Schema) with each
 * transition.
 *
 * @since 0.1.0
 * @category models
 */
export const FulfilmentState = Schema.Struct({
  order: Schema.String,
  sku: Schema.String,
  quantity: Schema.Int,
  amount: Schema.Int,
  /** Set from the payment service's `Charged` reply. */
  chargeId: Schema.NullOr(Schema.String)
})

/**
 * @since 0.1.0
 * @category models
 */
export type FulfilmentState = typeof FulfilmentState.Type

/** A step's result that emits what `Saga.emit` encoded. */
const emitting = Effect.map((emit: Saga.Emit) => ({ emit: [emit] }))

/** The data of a `Charged` reply, as a step receives it (encoded, without its tag). */
const ChargedReply = Charged.pipe(Schema.omit("_tag"))

/**
 * Order fulfilment: reserve stock → charge payment → ship.
 *
 * @since 0.1.0
 * @category sagas
 */
export const makeFulfilment = ({ Order, Stock, Payment, Shipping }: Aggregates, name: string) => {
  // A step returns what it emits; the runner appends it, tagged with the instance's
  // correlation id, in the transaction that records the step.
  const reserveStock = Saga.step<FulfilmentState, Placed>("reserve-stock", {
    run: (state) => emitting(Saga.emit(Stock, state.sku, Reserved.make({ order: state.order, quantity: state.quantity }))),
    // Runs when a later step fails: put the stock back.
    compensate: (state) =>
      emitting(Saga.emit(Stock, state.sku, Released.make({ order: state.order, quantity: state.quantity })))
  })

  const chargePayment = Saga.step<FulfilmentState, Placed>("charge-payment", {
    run: (state) => emitting(Saga.emit(Payment, state.order, ChargeRequested.make({ order: state.order, amount: state.amount }))),
    // Runs only if a step after this one fails (a declined charge has nothing to refund).
    compensate: (state) => emitting(Saga.emit(Payment, state.order, Refunded.make({ order: state.order }))),
    // Wait for the payment service: `Charged` continues, `Declined` (an error response) compensates.
    awaits: Saga.awaitEvent(Payment, { timeout: "30 seconds", only: ["Charged", "Declined"] })
  })

  const ship = Saga.step<FulfilmentState, Placed>("ship", {
    // The input is the reply the previous step awaited: here, `Charged`.
    run: (state, input) =>
      Effect.gen(function* () {
        const { chargeId } = yield* Schema.decodeUnknown(ChargedReply)(input._tag === "Response" ? input.data : {})
        const requested = yield* Saga.emit(
          Shipping,
          state.order,
          ShipmentRequested.make({ order: state.order, sku: state.sku, quantity: state.quantity })
        )
        return {
          state: { ...state, chargeId },
          emit: [requested],
          // For the world outside the database: queued in this transition's transaction,
          // published after it commits, at least once, under a stable idempotency key.
          outbox: [
            { topic: "warehouse.pick", payload: { order: state.order, sku: state.sku, quantity: state.quantity, chargeId } }
          ]
        }
      }),
    awaits: Saga.awaitEvent(Shipping, { timeout: "1 minute", only: ["Shipped"] })
  })

  return Saga.make({
    name,
    state: FulfilmentState,
    startOn: {
      aggregate: Order,
      // Every `Placed` starts one instance, named after the order: a start event
      // delivered twice still yields one instance.
      start: (placed, recorded) => {
        const order = recorded.streamId.slice(Order.category.length + 1)
        return Option.some({
          instanceId: order,
          state: { order, sku: placed.sku, quantity: placed.quantity, amount: placed.amount, chargeId: null }
        })
      }
    },
    steps: [reserveStock, chargePayment, ship]
  })
}

/**
 * The payment service declines charges over this amount.
 *
 * @since 0.1.0
 */
export const cardLimit = 1000

/**
 * The payment service: answers each `ChargeRequested` with `Charged`, or with
 * `Declined` as an error response (`Either.left`) when the amount is over
 * the card limit.
 *
 * A projection here; in production another system that reads the request
 * and appends its reply with the request's `correlationId`. It is
 * at-least-once, so a real one would charge each order only once.
 *
 * @since 0.1.0
 * @category services
 */
export const paymentService = ({ Payment }: Aggregates, subscriptionId: string) =>
  Projection.atLeastOnce({
    subscriptionId,
    aggregate: Payment,
    handle: ({ event, recorded }) => {
      if (event._tag !== "ChargeRequested") return Effect.void
      const { order, amount } = event
      const reply =
        amount <= cardLimit
          ? Either.right(Charged.make({ order, chargeId: `ch_${order}` }))
          : Either.left(Declined.make({ order, reason: `over the $${cardLimit} card limit` }))
      const outcome = Either.match(reply, {
        onRight: (charged) => `charged (${charged.chargeId})`,
        onLeft: (declined) => `declined, ${declined.reason}`
      })
      return Console.log(`payment service: ${order} $${amount} ${outcome}`).pipe(
        Effect.zipRight(Saga.reply(Payment, order, recorded.metadata.correlationId, reply))
      )
    }
  })

/**
 * The shipping service: answers each `ShipmentRequested` with `Shipped`.
 *
 * @since 0.1.0
 * @category services
 */
export const shippingService = ({ Shipping }: Aggregates, subscriptionId: string) =>
  Projection.atLeastOnce({
    subscriptionId,
    aggregate: Shipping,
    handle: ({ event, recorded }) => {
      if (event._tag !== "ShipmentRequested") return Effect.void
      const reply = Either.right(Shipped.make({ order: event.order, tracking: `trk_${event.order}` }))
      return Console.log(`shipping service: ${event.order} shipped`).pipe(
        Effect.zipRight(Saga.reply(Shipping, event.order, recorded.metadata.correlationId, reply))
      )
    }
  })

/** Repeats `check` until it holds, or dies after `within`. */
const waitUntil = <E, R>(check: Effect.Effect<boolean, E, R>, what: string, within: Duration.DurationInput) =>
  check.pipe(
    Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (done) => done }),
    Effect.timeoutOption(within),
    Effect.flatMap(
      Option.match({
        onNone: () => Effect.dieMessage(`still waiting for ${what} after ${Duration.format(Duration.decode(within))}`),
        onSome: () => Effect.void
      })
    )
  )

const orders = [
  { id: "ada-1", placed: Placed.make({ sku: "kettle", quantity: 2, amount: 80 }) },
  { id: "grace-1", placed: Placed.make({ sku: "piano", quantity: 1, amount: 2400 }) }
] as const

/**
 * Starts a saga worker and the two services, places an order within the card
 * limit and one over it, waits until both instances have finished, then
 * prints their status, their history and the stock streams.
 *
 * @since 0.1.0
 */
export const program = Effect.scoped(
  Effect.gen(function* () {
    const store = yield* SagaStore.SagaStore
    const run = crypto.randomUUID().slice(0, 8)
    const aggregates = makeAggregates(run)
    const { Order, Stock } = aggregates
    const fulfilment = makeFulfilment(aggregates, `fulfilment_${run}`)

    // Stands in for a broker or an HTTP call that passes the idempotency key on
    // (an `Idempotency-Key` header): the receiving side drops a key it has seen.
    const delivered = yield* Ref.make(HashSet.empty<string>())
    const publisher: SagaRunner.Publisher = (message) =>
      Effect.gen(function* () {
        if (HashSet.has(yield* Ref.get(delivered), message.idempotencyKey)) {
          return yield* Console.log(`outbox: ${message.idempotencyKey} seen before, dropped`)
        }
        yield* Console.log(`outbox: ${message.topic} ${JSON.stringify(message.payload)} (key ${message.idempotencyKey})`)
        yield* Ref.update(delivered, HashSet.add(message.idempotencyKey))
      })

    // Both stop when the example's scope closes. Short intervals for a demo; the defaults are 1 s.
    const workerId = `saga-example-${run}`
    yield* SagaRunner.run([fulfilment], {
      workerId,
      pollInterval: "100 millis",
      projections: { pollInterval: "50 millis" },
      publisher
    })
    yield* ProjectionRunner.run(
      [paymentService(aggregates, `payments_${run}`), shippingService(aggregates, `shipping_${run}`)],
      { workerId, pollInterval: "50 millis" }
    )
    yield* Console.log(`saga ${fulfilment.name}: worker ${workerId}, payment and shipping services running`)

    for (const { id, placed } of orders) {
      const root = yield* EventStore.loadOrDefault(Order, id)
      yield* EventStore.save(AggregateRoot.record(root, placed))
      yield* Console.log(`placed ${id}: ${placed.quantity} × ${placed.sku}, $${placed.amount} (card limit $${cardLimit})`)
    }

    // No sleeps: poll the instances' status until both have finished, within a deadline.
    const started = Date.now()
    const ids = orders.map((o) => o.id)
    const finished = Effect.map(SagaRunner.status(fulfilment), (all) =>
      ids.every((id) => all.some((s) => s.instanceId === id && (s.status === "completed" || s.status === "failed")))
    )
    yield* waitUntil(finished, "both orders to finish", "30 seconds")
    // The outbox is published after its transition commits: wait for the message too.
    const key = `${Saga.correlationId(fulfilment.name, "ada-1")}:ship:0`
    yield* waitUntil(Effect.map(Ref.get(delivered), HashSet.has(key)), "the outbox message", "30 seconds")
    yield* Console.log(`both orders finished within ${Date.now() - started} ms`)

    const statuses = yield* SagaRunner.status(fulfilment)
    for (const id of ids) {
      const status = statuses.find((s) => s.instanceId === id)
      if (status === undefined) continue
      yield* Console.log(`${id}: ${status.status}${status.error === null ? "" : ` (${status.error})`}`)
      const history = yield* store.history(fulfilment.name, id)
      yield* Effect.forEach(history, (h) => Console.log(`  ${h.step}: ${h.outcome}`), { discard: true })
    }

    yield* Console.log("stock, per sku:")
    for (const { placed } of orders) {
      const events = yield* EventStore.readStream(`${Stock.category}-${placed.sku}`).pipe(
        Stream.mapEffect(Stock.codec.decode),
        Stream.runCollect
      )
      const stock = yield* EventStore.loadOrDefault(Stock, placed.sku)
      const story = [...events].map((e) => `${e._tag} ${e.quantity} (${e.order})`).join(", ")
      yield* Console.log(`  ${placed.sku}: ${story}; ${stock.state.reserved} reserved now`)
    }
  })
)
