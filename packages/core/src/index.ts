/**
 * @mire/core: event sourcing for Effect.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Aggregate from "./Aggregate.js"
/** @since 0.1.0 */
export * as AggregateRoot from "./AggregateRoot.js"
/** @since 0.1.0 */
export * as Checkpoint from "./Checkpoint.js"
/** @since 0.2.0 */
export * as CommandHandler from "./CommandHandler.js"
/** @since 0.2.0 */
export * as CommandLog from "./CommandLog.js"
/** @since 0.1.0 */
export * as Cursor from "./Cursor.js"
/** @since 0.2.0 */
export * as DeadLetters from "./DeadLetters.js"
/** @since 0.1.0 */
export * as EventCodec from "./EventCodec.js"
/** @since 0.1.0 */
export * as EventStore from "./EventStore.js"
/** @since 0.1.0 */
export * as EventStoreError from "./EventStoreError.js"
/** @since 0.1.0 */
export * as ExpectedVersion from "./ExpectedVersion.js"
/** @since 0.1.0 */
export * as HoldBack from "./HoldBack.js"
/** @since 0.1.0 */
export * as InMemory from "./InMemory.js"
/** @since 0.1.0 */
export * as Lease from "./Lease.js"
/** @since 0.1.0 */
export * as LeaseStore from "./LeaseStore.js"
/** @since 0.1.0 */
export * as Metrics from "./Metrics.js"
/** @since 0.2.0 */
export * as Partition from "./Partition.js"
/** @since 0.1.0 */
export * as Projection from "./Projection.js"
/** @since 0.1.0 */
export * as ProjectionRunner from "./ProjectionRunner.js"
/** @since 0.2.0 */
export * as Rebalance from "./Rebalance.js"
/** @since 0.1.0 */
export * as RecordedEvent from "./RecordedEvent.js"
/** @since 0.2.0 */
export * as Retention from "./Retention.js"
/** @since 0.1.0 */
export * as Saga from "./Saga.js"
/** @since 0.1.0 */
export * as SagaRunner from "./SagaRunner.js"
/** @since 0.1.0 */
export * as SagaStore from "./SagaStore.js"
/** @since 0.1.0 */
export * as Snapshot from "./Snapshot.js"
/** @since 0.1.0 */
export * as StreamId from "./StreamId.js"
/** @since 0.1.0 */
export * as Subscription from "./Subscription.js"
/** @since 0.1.0 */
export * as SubscriptionStore from "./SubscriptionStore.js"
/** @since 0.1.0 */
export * as SubscriptionId from "./SubscriptionId.js"
/** @since 0.2.0 */
export * as WorkerStore from "./WorkerStore.js"
