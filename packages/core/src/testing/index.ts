/**
 * @mire/core/testing: the test kit. Given/When/Then for aggregates and
 * command functions (pure, no store), projection specs on a real store, and
 * `whenCaughtUp` so integration tests wait for projections instead of
 * sleeping.
 *
 * @example
 * ```ts
 * import { AggregateSpec, ProjectionSpec } from "@mire/core/testing"
 * ```
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as AggregateSpec from "./AggregateSpec.js"
/** @since 0.1.0 */
export * as ProjectionSpec from "./ProjectionSpec.js"
/** @since 0.1.0 */
export * as SpecFailure from "./SpecFailure.js"
