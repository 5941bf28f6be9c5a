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
 * This example prints a short summary when it ends: the spans by name (how
 * many, total and longest duration, errors) and the value of every metric.
 * In production, give {@link Telemetry} OTLP exporters
 * (`@opentelemetry/exporter-*`) to send the same data to a collector.
 *
 * Run: `npm run example -- telemetry`
 *
 * @since 0.1.0
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { Aggregate, AggregateRoot, EventStore, Metrics, Projection, ProjectionRunner } from "@mire/core"
import { SpanStatusCode } from "@opentelemetry/api"
import { MetricReader, type ResourceMetrics } from "@opentelemetry/sdk-metrics"
import type { ReadableSpan, SpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Console, Effect, Either, Layer, Metric, Schema } from "effect"

/**
 * @since 0.1.0
 * @category events
 */
export const Funded = Schema.TaggedStruct("Funded", { amount: Schema.Int.pipe(Schema.positive()) })
/**
 * @since 0.1.0
 * @category events
 */
export const Spent = Schema.TaggedStruct("Spent", { amount: Schema.Int.pipe(Schema.positive()) })

/**
 * @since 0.1.0
 * @category models
 */
export const WalletState = Schema.Struct({ balance: Schema.Int })
/**
 * @since 0.1.0
 * @category models
 */
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
 * ```ts
 * import { EventStore } from "@mire/core"
 * import { Telemetry } from "@mire/examples/telemetry"
 * import { AggregationTemporality, InMemoryMetricExporter, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics"
 * import { BatchSpanProcessor, InMemorySpanExporter } from "@opentelemetry/sdk-trace-base"
 * import { Effect } from "effect"
 *
 * const program = EventStore.streamVersion("wallet-1")
 * const traced = program.pipe(
 *   Effect.provide(
 *     Telemetry({
 *       spanProcessor: new BatchSpanProcessor(new InMemorySpanExporter()),
 *       metricReader: new PeriodicExportingMetricReader({
 *         exporter: new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
 *       })
 *     })
 *   )
 * )
 * ```
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
 * Spans of one name: how many ended, their total and longest duration, and
 * how many ended in error.
 *
 * @since 0.1.0
 * @category models
 */
export interface SpanStats {
  readonly name: string
  readonly count: number
  readonly totalMillis: number
  readonly maxMillis: number
  readonly errors: number
}

/**
 * A span processor that keeps, per span name, the count and durations of the
 * spans that ended (not the spans themselves).
 *
 * @since 0.1.0
 * @category telemetry
 */
export class SpanStatsProcessor implements SpanProcessor {
  private readonly byName = new Map<string, SpanStats>()
  onStart(): void {}
  onEnd(span: ReadableSpan): void {
    const millis = span.duration[0] * 1_000 + span.duration[1] / 1_000_000
    const before = this.byName.get(span.name) ?? { name: span.name, count: 0, totalMillis: 0, maxMillis: 0, errors: 0 }
    this.byName.set(span.name, {
      name: span.name,
      count: before.count + 1,
      totalMillis: before.totalMillis + millis,
      maxMillis: Math.max(before.maxMillis, millis),
      errors: before.errors + (span.status.code === SpanStatusCode.ERROR ? 1 : 0)
    })
  }
  forceFlush(): Promise<void> {
    return Promise.resolve()
  }
  shutdown(): Promise<void> {
    return Promise.resolve()
  }
  /** The spans seen so far, by name. */
  get stats(): ReadonlyArray<SpanStats> {
    return [...this.byName.values()]
  }
}

/**
 * A metric reader that reads every metric once, when the SDK shuts down
 * (Effect's metrics included), and keeps what it read.
 *
 * @since 0.1.0
 * @category telemetry
 */
export class FinalMetricReader extends MetricReader {
  private read: ResourceMetrics | undefined = undefined
  protected override async onShutdown(): Promise<void> {
    this.read = (await this.collect()).resourceMetrics
  }
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve()
  }
  /** The metrics read at shutdown (none before). */
  get metrics(): ResourceMetrics | undefined {
    return this.read
  }
}

const millis = (n: number) => (n < 10 ? n.toFixed(2) : n.toFixed(1))

/**
 * The span part of the summary: one line per span name, the most time first.
 *
 * @since 0.1.0
 * @category telemetry
 */
export const summarizeSpans = (stats: ReadonlyArray<SpanStats>): ReadonlyArray<string> => {
  const sorted = [...stats].sort((a, b) => b.totalMillis - a.totalMillis)
  const width = Math.max(4, ...sorted.map((s) => s.name.length))
  return [
    `spans (${sorted.reduce((n, s) => n + s.count, 0)}):`,
    `  ${"name".padEnd(width)}  count  total ms    max ms  errors`,
    ...sorted.map(
      (s) =>
        `  ${s.name.padEnd(width)}  ${String(s.count).padStart(5)}  ${millis(s.totalMillis).padStart(8)}  ${millis(s.maxMillis).padStart(8)}  ${String(s.errors).padStart(6)}`
    )
  ]
}

/**
 * The metric part of the summary: one line per metric and attribute set,
 * by name (a histogram as its count, sum and maximum).
 *
 * @since 0.1.0
 * @category telemetry
 */
export const summarizeMetrics = (metrics: ResourceMetrics | undefined): ReadonlyArray<string> => {
  const rows: Array<readonly [string, string]> = []
  for (const metric of (metrics?.scopeMetrics ?? []).flatMap((scope) => scope.metrics)) {
    for (const point of metric.dataPoints) {
      const attributes = Object.entries(point.attributes).map(([k, v]) => `${k}=${String(v)}`)
      const name = attributes.length === 0 ? metric.descriptor.name : `${metric.descriptor.name}{${attributes.join(",")}}`
      const value = point.value
      rows.push([
        name,
        typeof value === "number"
          ? String(value)
          : `count ${value.count}, sum ${millis(value.sum ?? 0)}, max ${millis(value.max ?? 0)}`
      ])
    }
  }
  rows.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  const width = Math.max(0, ...rows.map(([name]) => name.length))
  return [`metrics (${rows.length}):`, ...rows.map(([name, value]) => `  ${name.padEnd(width)}  ${value}`)]
}

/**
 * The OpenTelemetry SDK over a {@link SpanStatsProcessor} and a
 * {@link FinalMetricReader}; when the layer closes (after the SDK has shut
 * down and read the metrics a last time) it prints the summary with `print`.
 *
 * @since 0.1.0
 * @category layers
 */
export const SummaryTelemetry = (
  print: (lines: ReadonlyArray<string>) => Effect.Effect<void> = (lines) => Console.log(lines.join("\n"))
): Layer.Layer<never> =>
  Layer.unwrapScoped(
    Effect.gen(function* () {
      const spans = new SpanStatsProcessor()
      const metrics = new FinalMetricReader()
      // Added before the SDK's own finalizers, so it runs after them.
      yield* Effect.addFinalizer(() =>
        Effect.suspend(() => print(["--- telemetry summary ---", ...summarizeSpans(spans.stats), ...summarizeMetrics(metrics.metrics)]))
      )
      return Telemetry({ spanProcessor: spans, metricReader: metrics })
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
 * The work, with a summary of its spans and metrics printed at the end.
 *
 * @since 0.1.0
 */
export const program = work.pipe(Effect.provide(SummaryTelemetry()))
