/**
 * mire's metrics, through Effect's `Metric`. Export them with
 * `@effect/opentelemetry` or read them with `Metric.value`.
 *
 * @since 0.1.0
 */
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"

/**
 * Append calls.
 *
 * @since 0.1.0
 */
export const appends = Metric.counter("mire_appends_total", { description: "append calls", incremental: true })
/**
 * Events appended.
 *
 * @since 0.1.0
 */
export const eventsAppended = Metric.counter("mire_events_appended_total", {
  description: "events appended",
  incremental: true
})
/**
 * Appends refused by the optimistic-concurrency check.
 *
 * @since 0.1.0
 */
export const conflicts = Metric.counter("mire_concurrency_conflicts_total", {
  description: "appends refused by a version conflict",
  incremental: true
})
/**
 * Time to load (replay) an aggregate, in milliseconds.
 *
 * @since 0.1.0
 */
export const loadDuration = Metric.histogram(
  "mire_load_duration_ms",
  MetricBoundaries.exponential({ start: 0.5, factor: 2, count: 14 }),
  "aggregate load duration (ms)"
)
/**
 * Loads that used a snapshot.
 *
 * @since 0.1.0
 */
export const snapshotHits = Metric.counter("mire_snapshot_hits_total", { incremental: true })
/**
 * Loads that found no snapshot.
 *
 * @since 0.1.0
 */
export const snapshotMisses = Metric.counter("mire_snapshot_misses_total", { incremental: true })
/**
 * Snapshots ignored (old version, undecodable, beyond the stream).
 *
 * @since 0.1.0
 */
export const snapshotInvalidations = Metric.counter("mire_snapshot_invalidations_total", { incremental: true })
/**
 * Snapshots written.
 *
 * @since 0.1.0
 */
export const snapshotWrites = Metric.counter("mire_snapshot_writes_total", { incremental: true })
/**
 * Events behind the head, per subscription (tag `subscription`).
 *
 * @since 0.1.0
 */
export const subscriptionLag = Metric.gauge("mire_subscription_lag_events")
/**
 * Wake-ups a subscription took, by payload (the category; `""` after the listener reconnected), per subscription (tag `subscription`).
 *
 * @since 0.1.0
 */
export const wakeups = Metric.frequency("mire_subscription_wakeups")
/**
 * Events held back for per-stream order, per subscription.
 *
 * @since 0.1.0
 */
export const heldBack = Metric.gauge("mire_subscription_held_back")
/**
 * Events delivered by subscriptions.
 *
 * @since 0.1.0
 */
export const delivered = Metric.counter("mire_subscription_delivered_total", { incremental: true })
/**
 * Lease acquisitions.
 *
 * @since 0.1.0
 */
export const leaseAcquired = Metric.counter("mire_lease_acquisitions_total", { incremental: true })
/**
 * Leases lost (expired or taken over while held).
 *
 * @since 0.1.0
 */
export const leaseLost = Metric.counter("mire_lease_losses_total", { incremental: true })
/**
 * Leases handed over to rebalance the workers (a leader above its fair share
 * stopped at a batch boundary and released the lease).
 *
 * @since 0.2.0
 */
export const leaseHandovers = Metric.counter("mire_lease_handovers_total", { incremental: true })
/**
 * Checkpoints or transactional writes refused by the fence.
 *
 * @since 0.1.0
 */
export const fenceRefusals = Metric.counter("mire_fence_refusals_total", { incremental: true })
/**
 * Handler failures (each failed attempt).
 *
 * @since 0.1.0
 */
export const handlerFailures = Metric.counter("mire_handler_failures_total", { incremental: true })
/**
 * Handler retries.
 *
 * @since 0.1.0
 */
export const handlerRetries = Metric.counter("mire_handler_retries_total", { incremental: true })
/**
 * Dead letters recorded by projections with `onFailure: "skip"`, per
 * subscription (tag `subscription`) and status (tag `status`: `failed` for
 * an event that kept failing, `parked` for a later event of its stream).
 *
 * @since 0.2.0
 */
export const deadLetters = Metric.counter("mire_dead_letters", {
  description: "events set aside as dead letters",
  incremental: true
})
/**
 * Saga instances by state (tag `state`).
 *
 * @since 0.1.0
 */
export const sagaInstances = Metric.gauge("mire_saga_instances")
