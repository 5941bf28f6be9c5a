/**
 * The storage service of leases: the primitives a store supplies (acquire,
 * renew, release, status, and the fenced commit that closes a checkpoint's
 * transaction). The rules they apply are in `Lease`.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import type * as Checkpoint from "./Checkpoint.js"
import type { StoreError } from "./EventStoreError.js"
import * as Memory from "./internal/memory/eventStore.js"
import * as MemoryLeaseStore from "./internal/memory/leaseStore.js"
import type { Fence, LeaseLost, LeaseStatus, ResetDecision } from "./Lease.js"

/**
 * The storage primitives of leases.
 *
 * @since 0.1.0
 * @category storage
 */
export interface LeaseStore {
  /** Takes the lease if free or expired, bumping the fence token. */
  readonly acquire: (
    subscriptionId: string,
    workerId: string,
    ttl: Duration.Duration
  ) => Effect.Effect<Option.Option<LeaseStatus>, StoreError>
  /** Extends a lease still held with `fence`; `false` when it is no longer ours. */
  readonly renew: (subscriptionId: string, fence: Fence, ttl: Duration.Duration) => Effect.Effect<boolean, StoreError>
  /** Frees a lease held with `fence` at once (no wait for the TTL). */
  readonly release: (subscriptionId: string, fence: Fence) => Effect.Effect<void, StoreError>
  readonly status: (subscriptionId: string) => Effect.Effect<Option.Option<LeaseStatus>, StoreError>
  /**
   * Under the row lock, decides a reset with `Lease.decideReset` (time from
   * the store's clock) and applies it: on `Reset`, writes `checkpoint`,
   * bumps the fence token, frees the lease and clears a recorded failure.
   * Returns the decision.
   */
  readonly reset: (
    subscriptionId: string,
    checkpoint: Checkpoint.Checkpoint,
    force: boolean
  ) => Effect.Effect<ResetDecision, StoreError>
  /**
   * Runs `effect` in one transaction that ends by writing the checkpoint
   * under `fence`; if the fence no longer holds, everything rolls
   * back and it fails with `LeaseLost`.
   */
  readonly commitFenced: <A, E, R>(
    subscriptionId: string,
    fence: Fence,
    checkpoint: Checkpoint.Checkpoint,
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | LeaseLost | StoreError, R>
}

/**
 * The `LeaseStore` tag.
 *
 * @since 0.1.0
 * @category tags
 */
export const LeaseStore: Context.Tag<LeaseStore, LeaseStore> = Context.GenericTag<LeaseStore>("@mire/core/LeaseStore")

/**
 * The in-memory `LeaseStore`, over the driver of `EventStore.layerMemory`
 * (`InMemory.layer` provides both). Time comes from `Clock`, so `TestClock`
 * drives expiry.
 *
 * @example
 * ```ts
 * import { EventStore, Lease, LeaseStore } from "@mire/core"
 * import { Effect, Layer } from "effect"
 *
 * const layer = LeaseStore.layerMemory.pipe(Layer.provideMerge(EventStore.layerMemory))
 * const program = Lease.status("balances").pipe(Effect.provide(layer))
 * ```
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<LeaseStore, never, Memory.Driver> = Layer.effect(
  LeaseStore,
  Effect.map(Memory.Driver, (driver) => MemoryLeaseStore.make(driver))
)
