/**
 * @mire/core/conformance: the contract a store must pass. Each suite is a
 * function that registers `@effect/vitest` tests over the Layer of the store
 * under test; a driver's test file calls the suites it implements (see the
 * README, "Writing a store"). Needs `vitest` and `@effect/vitest`, optional
 * peer dependencies of @mire/core that only this entry imports, and runs
 * only inside vitest: vitest refuses to load outside its runner, so this
 * entry has no runnable example here.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * from "./catchUpSuite.js"
/** @since 0.2.0 */
export * from "./commandHandlerSuite.js"
/** @since 0.2.0 */
export * from "./deadLetterSuite.js"
/** @since 0.1.0 */
export * from "./eventStoreSuite.js"
/** @since 0.1.0 */
export * from "./evolutionSuite.js"
/** @since 0.1.0 */
export * from "./fixtures.js"
/** @since 0.1.0 */
export * from "./holdBackRestartSuite.js"
/** @since 0.1.0 */
export * from "./jsonSuite.js"
/** @since 0.2.0 */
export * from "./lifecycleSuite.js"
/** @since 0.2.0 */
export * from "./partitionSuite.js"
/** @since 0.1.0 */
export * from "./projectionSuite.js"
/** @since 0.2.0 */
export * from "./retentionSuite.js"
/** @since 0.1.0 */
export * from "./sagaClaimSuite.js"
/** @since 0.1.0 */
export * from "./sagaSuite.js"
/** @since 0.2.0 */
export * from "./scaleOutSuite.js"
/** @since 0.1.0 */
export * from "./scopes.js"
/** @since 0.1.0 */
export * from "./snapshotSuite.js"
/** @since 0.2.0 */
export * from "./startSuite.js"
/** @since 0.2.0 */
export * from "./startInFlightSuite.js"
/** @since 0.1.0 */
export * from "./statusSuite.js"
/** @since 0.1.0 */
export * from "./subscriptionSuite.js"
/** @since 0.1.0 */
export * from "./transactionSuite.js"
