/**
 * The telemetry example: its spans and metrics reach OpenTelemetry
 * (in-memory exporters), and the summary it prints reads them.
 */
import { assert, describe, it } from "@effect/vitest"
import { InMemory, Metrics } from "@mire/core"
import { AggregationTemporality, InMemoryMetricExporter, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics"
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Effect, Metric } from "effect"
import * as telemetry from "../src/telemetry.js"

const attribute = (span: ReadableSpan, key: string) => span.attributes[key]

describe("telemetry example", () => {
  it.live("store operations and projection batches are spans; mire's metrics are exported", () => {
    const spans = new InMemorySpanExporter()
    const metrics = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
    const reader = new PeriodicExportingMetricReader({ exporter: metrics, exportIntervalMillis: 60_000 })
    return Effect.gen(function* () {
      yield* telemetry.work
      const finished = spans.getFinishedSpans()
      const names = new Set(finished.map((s) => s.name))
      for (const name of [
        "example.telemetry",
        "EventStore.saveSnapshotting",
        "EventStore.save",
        "EventStore.appendMany",
        "EventStore.loadSnapshotted",
        "ProjectionRunner.batch",
        "Subscription.poll"
      ]) {
        assert.isTrue(names.has(name), `span ${name} exported; got ${[...names].join(", ")}`)
      }
      const root = finished.find((s) => s.name === "example.telemetry")!
      const save = finished.find((s) => s.name === "EventStore.save")!
      assert.strictEqual(save.spanContext().traceId, root.spanContext().traceId, "one trace")
      assert.match(String(attribute(save, "mire.stream_id")), /^wallet-/)
      const conflict = finished.find((s) => s.name === "EventStore.appendMany" && s.status.code === 2)
      assert.isDefined(conflict, "the conflicting append's span is an error")
      const batch = finished.find((s) => s.name === "ProjectionRunner.batch")!
      assert.match(String(attribute(batch, "mire.subscription_id")), /^telemetry-/)
      assert.isAbove(Number(attribute(batch, "mire.batch_size")), 0)
      assert.strictEqual(attribute(batch, "mire.fence_token"), "1")

      yield* Effect.promise(() => reader.forceFlush())
      const exported = metrics.getMetrics().flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics))
      const value = (name: string) => {
        const metric = exported.filter((m) => m.descriptor.name === name).at(-1)
        return metric === undefined ? undefined : metric.dataPoints.reduce((n, p) => n + Number(p.value), 0)
      }
      assert.isAtLeast(value("mire_appends_total") ?? 0, 6)
      assert.isAtLeast(value("mire_events_appended_total") ?? 0, 6)
      assert.isAtLeast(value("mire_concurrency_conflicts_total") ?? 0, 1)
      assert.isAtLeast(value("mire_snapshot_writes_total") ?? 0, 1)
      assert.isAtLeast(value("mire_snapshot_hits_total") ?? 0, 1)
      assert.isAtLeast(value("mire_lease_acquisitions_total") ?? 0, 1)
      assert.isDefined(exported.find((m) => m.descriptor.name === "mire_load_duration_ms"), "the load histogram")
    }).pipe(
      Effect.provide(telemetry.Telemetry({ spanProcessor: new SimpleSpanProcessor(spans), metricReader: reader })),
      Effect.provide(InMemory.layer)
    )
  })

  it.live("the example prints a short summary: spans by name with counts and durations, then metric values", () =>
    Effect.gen(function* () {
      const printed: Array<string> = []
      yield* telemetry.work.pipe(Effect.provide(telemetry.SummaryTelemetry((lines) => Effect.sync(() => void printed.push(...lines)))))
      // Printed once, when the telemetry layer closed (after the SDK read the metrics a last time).
      assert.strictEqual(printed.filter((l) => l === "--- telemetry summary ---").length, 1)
      assert.strictEqual(printed[0], "--- telemetry summary ---")
      assert.isBelow(printed.length, 60, printed.join("\n"))
      assert.isTrue(printed.every((l) => l.length <= 120 && !l.includes("[object")), printed.join("\n"))
      const line = (pattern: RegExp) => assert.isTrue(printed.some((l) => pattern.test(l)), `${pattern} in\n${printed.join("\n")}`)
      line(/^spans \(\d+\):$/)
      line(/^ {2}name +count +total ms +max ms +errors$/)
      const ms = String.raw` +\d+\.\d+ +\d+\.\d+ +`
      line(new RegExp(`^  example\\.telemetry +1${ms}0$`))
      line(new RegExp(`^  EventStore\\.saveSnapshotting +6${ms}0$`))
      line(new RegExp(`^  EventStore\\.save +7${ms}1$`))
      line(new RegExp(`^  EventStore\\.loadSnapshotted +1${ms}0$`))
      line(/^ {2}ProjectionRunner\.batch +\d+ /)
      line(/^metrics \(\d+\):$/)
      // Effect's metrics are process-wide (the test above counted too): the summary shows their values now.
      const count = (counter: Metric.Metric.Counter<number>) => Effect.map(Metric.value(counter), (state) => state.count)
      const appends = yield* count(Metrics.appends)
      assert.isAtLeast(appends, 7)
      line(new RegExp(`^  mire_appends_total +${appends}$`))
      line(new RegExp(`^  mire_events_appended_total +${yield* count(Metrics.eventsAppended)}$`))
      line(new RegExp(`^  mire_concurrency_conflicts_total +${yield* count(Metrics.conflicts)}$`))
      line(new RegExp(`^  mire_snapshot_hits_total +${yield* count(Metrics.snapshotHits)}$`))
      const loads = (yield* Metric.value(Metrics.loadDuration)).count
      line(new RegExp(`^  mire_load_duration_ms +count ${loads}, sum \\d+\\.\\d+, max \\d+\\.\\d+$`))
      line(/^ {2}mire_subscription_lag_events\{subscription=telemetry-[0-9a-f]{8}\} +0$/)
    }).pipe(Effect.provide(InMemory.layer)))
})
