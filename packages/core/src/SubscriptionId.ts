/**
 * Subscription ids: the name a subscription (and the projection or saga
 * reading through it) is stored and fenced under, 1-255 characters of any
 * kind. Like `StreamId`, inputs take a plain string and validate it; what
 * the store hands back carries the brand.
 *
 * @since 0.1.0
 */
import * as Brand from "effect/Brand"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { InvalidInput } from "./EventStoreError.js"

/**
 * The longest subscription id accepted.
 *
 * @since 0.1.0
 * @category constants
 */
export const maxLength = 255

/**
 * A validated subscription id.
 *
 * @example
 * ```ts
 * import { SubscriptionId } from "@mire/core"
 * import { Schema } from "effect"
 *
 * assert.strictEqual(Schema.decodeSync(SubscriptionId.SubscriptionId)("balances"), "balances")
 * assert.strictEqual(Schema.is(SubscriptionId.SubscriptionId)(""), false)
 * ```
 * @since 0.1.0
 * @category schemas
 */
export const SubscriptionId = Schema.String.pipe(
  Schema.minLength(1),
  Schema.maxLength(maxLength),
  Schema.brand("SubscriptionId"),
  Schema.annotations({ identifier: "SubscriptionId" })
)

/**
 * @since 0.1.0
 * @category models
 */
export type SubscriptionId = typeof SubscriptionId.Type

/**
 * Is a value a valid subscription id? The check of the {@link SubscriptionId} Schema.
 *
 * @since 0.1.0
 * @category guards
 */
export const is = (u: unknown): u is SubscriptionId => typeof u === "string" && u.length > 0 && u.length <= maxLength

/**
 * Validates a subscription id.
 *
 * @since 0.1.0
 * @category validation
 */
export const validate = (subscriptionId: string): Effect.Effect<SubscriptionId, InvalidInput> =>
  is(subscriptionId)
    ? Effect.succeed(subscriptionId)
    : Effect.fail(new InvalidInput({ field: "subscriptionId", reason: `must be 1-${maxLength} characters` }))

/**
 * Brands a subscription id read back from a store without checking it again:
 * a store holds only ids validated when the subscription was made.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromStored: (subscriptionId: string) => SubscriptionId = Brand.nominal<SubscriptionId>()
