/**
 * # Pattern: Telemetry (`telemetry`)
 *
 * **Why this pattern exists.** In production you want to see what the
 * event store is doing: how long loads take, how often appends conflict,
 * whether snapshots hit, how far each projection lags, which worker holds
 * which lease. mire reports all of it through Effect's own `Metric` and
 * tracing, so there is nothing mire-specific to install: provide an
 * OpenTelemetry layer (`@effect/opentelemetry`) and every store operation
 * and every projection batch becomes a span, and every `mire_*` metric is
 * exported.
 *
 * Spans (attributes in brackets):
 * - `EventStore.save`, `.saveMany`, `.appendMany` [`mire.stream_id`, `mire.event_count`, `mire.stream_count`],
 *   `.load`, `.loadForUpdate`, `.loadSnapshotted`, `.saveSnapshotting` [`mire.stream_id`, `mire.version`],
 *   `.readStream` [`mire.stream_id`], `.readLog` [`mire.categories`], `.transaction`;
 * - `ProjectionRunner.batch` [`mire.subscription_id`, `mire.batch_size`, `mire.fence_token`];
 * - `Subscription.poll` [`mire.subscription_id`].
 *
 * Metrics: see `Metrics` in `@mire/core` (appends, events, conflicts, load
 * duration, snapshot hits/misses/invalidations/writes, subscription lag,
 * held-back and delivered counts, lease acquisitions/losses, fence
 * refusals, handler failures and retries).
 *
 * This example exports to the console: spans as they end, metrics once at
 * shutdown. Swap the exporters for OTLP ones (`@opentelemetry/exporter-*`)
 * to send them to a collector.
 *
 * Run: `npm run example -- telemetry`
 *
 * @since 0.1.0
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { Aggregate, AggregateRoot, EventStore, Metrics, Projection, ProjectionRunner } from "@mire/core"
import { ConsoleMetricExporter, type MetricReader, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics"
import { ConsoleSpanExporter, SimpleSpanProcessor, type SpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Console, Effect, Either, Layer, Metric, Schema } from "effect"

/** @since 0.1.0 @category events */
export const Funded = Schema.TaggedStruct("Funded", { amount: Schema.Int.pipe(Schema.positive()) })
/** @since 0.1.0 @category events */
export const Spent = Schema.TaggedStruct("Spent", { amount: Schema.Int.pipe(Schema.positive()) })

/** @since 0.1.0 @category models */
export const WalletState = Schema.Struct({ balance: Schema.Int })
/** @since 0.1.0 @category models */
export type WalletState = typeof WalletState.Type

/**
 * A wallet, snapshotted every 5 events.
 *
 * @since 0.1.0
 * @category aggregates
 */
export const Wallet = Aggregate.make({
  category: "wallet",
  events: Schema.Union(Funded, Spent),
  initial: { balance: 0 } as WalletState,
  apply: (state, event): WalletState => ({
    balance: event._tag === "Funded" ? state.balance + event.amount : state.balance - event.amount
  }),
  snapshot: { schema: WalletState, version: 1, every: 5 }
})

/**
 * The OpenTelemetry SDK as an Effect layer: spans go to `spanProcessor`,
 * mire's (and every other) Effect metrics to `metricReader`.
 *
 * @example
 * program.pipe(Effect.provide(Telemetry({ spanProcessor: new BatchSpanProcessor(new OTLPTraceExporter()), metricReader })))
 * @since 0.1.0
 * @category layers
 */
export const Telemetry = (exporters: {
  readonly spanProcessor: SpanProcessor
  readonly metricReader: MetricReader
}): Layer.Layer<never> =>
  Layer.discard(
    NodeSdk.layer(() => ({
      resource: { serviceName: "mire-example", serviceVersion: "0.1.0" },
      spanProcessor: exporters.spanProcessor,
      metricReader: exporters.metricReader
    }))
  )

/**
 * Console exporters: each span printed as it ends; metrics printed once,
 * when the layer closes.
 *
 * @since 0.1.0
 * @category layers
 */
export const ConsoleTelemetry: Layer.Layer<never> = Layer.suspend(() =>
  Telemetry({
    spanProcessor: new SimpleSpanProcessor(new ConsoleSpanExporter()),
    metricReader: new PeriodicExportingMetricReader({ exporter: new ConsoleMetricExporter(), exportIntervalMillis: 60_000 })
  })
)

const count = (counter: Metric.Metric.Counter<number>) => Effect.map(Metric.value(counter), (state) => state.count)

/**
 * The traced work, under one root span: writes, a conflict, snapshotted
 * loads, and a projection caught up with the log.
 *
 * @since 0.1.0
 */
export const work = Effect.gen(function* () {
  const id = crypto.randomUUID()
  let wallet = yield* EventStore.loadOrDefault(Wallet, id)
  for (let i = 1; i <= 6; i++) {
    wallet = yield* EventStore.saveSnapshotting(AggregateRoot.record(wallet, Funded.make({ amount: i })))
  }
  // A stale copy saves second: an optimistic-concurrency conflict.
  const stale = AggregateRoot.make(Wallet, id, wallet.state, wallet.version - 1)
  const conflict = yield* Effect.either(EventStore.save(AggregateRoot.record(stale, Spent.make({ amount: 1 }))))
  const loaded = yield* Effect.flatten(EventStore.loadSnapshotted(Wallet, id))
  yield* Console.log(
    `wallet ${id.slice(0, 8)}: balance ${loaded.state.balance} at v${loaded.version}; stale save: ${
      Either.isLeft(conflict) ? conflict.left._tag : "saved"
    }`
  )

  // A projection: each batch it handles is a span.
  const seen = new Set<string>()
  const subscriptionId = `telemetry-${id.slice(0, 8)}`
  const balances = Projection.atLeastOnce({
    subscriptionId,
    aggregate: Wallet,
    handle: ({ recorded }) => Effect.sync(() => void seen.add(recorded.streamId))
  })
  yield* Effect.scoped(
    Effect.gen(function* () {
      const runner = yield* ProjectionRunner.run([balances], { workerId: "telemetry-example", pollInterval: "50 millis" })
      yield* runner.whenCaughtUp(subscriptionId)
    })
  )
  yield* Console.log(`projection ${subscriptionId} caught up over ${seen.size} wallet(s)`)
  yield* Console.log(
    `metrics so far: ${yield* count(Metrics.appends)} appends, ${yield* count(Metrics.eventsAppended)} events, ` +
      `${yield* count(Metrics.conflicts)} conflict(s), ${yield* count(Metrics.snapshotHits)} snapshot hit(s), ` +
      `${(yield* Metric.value(Metrics.loadDuration)).count} timed load(s)`
  )
}).pipe(Effect.withSpan("example.telemetry"))

/**
 * The work, exported to the console.
 *
 * @since 0.1.0
 */
export const program = work.pipe(Effect.provide(ConsoleTelemetry))
