/**
 * @mire/pg: the PostgreSQL store for @mire/core.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as PgEventStore from "./PgEventStore.js"
/** @since 0.1.0 */
export * as PgLeaseStore from "./PgLeaseStore.js"
/** @since 0.1.0 */
export * as PgMigrations from "./PgMigrations.js"
/** @since 0.1.0 */
export * as PgSagaStore from "./PgSagaStore.js"
/** @since 0.1.0 */
export * as PgStatus from "./PgStatus.js"
/** @since 0.1.0 */
export * as PgStore from "./PgStore.js"
/** @since 0.1.0 */
export * as PgSubscriptionStore from "./PgSubscriptionStore.js"
/** @since 0.1.0 */
export * as PgWakeups from "./PgWakeups.js"
/** @since 0.1.0 */
export * as PgTransaction from "./PgTransaction.js"
/** @since 0.2.0 */
export * as PgSchema from "./PgSchema.js"
/** @since 0.2.0 */
export * as PgCommandLog from "./PgCommandLog.js"
/** @since 0.2.0 */
export * as PgDeadLetterStore from "./PgDeadLetterStore.js"
/** @since 0.2.0 */
export * as PgWorkerStore from "./PgWorkerStore.js"
