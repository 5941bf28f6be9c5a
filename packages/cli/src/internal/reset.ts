/**
 * `mire reset <subscription> --to start|head|<position>|<ISO time> [--force]`:
 * moves an existing subscription's checkpoint (`Subscription.resetTo`), so
 * its next leader replays from there with every stream in order. Refused
 * while a worker holds its lease, unless `--force`, which bumps the fence
 * token so the holder's next checkpoint is refused and it returns to standby.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Subscription from "@mire/core/Subscription"
import * as PgLeaseStore from "@mire/pg/PgLeaseStore"
import * as PgSubscriptionStore from "@mire/pg/PgSubscriptionStore"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Format from "../format.js"
import { common, withDatabase } from "./command.js"

/** What a reset printed: where the checkpoint is now, the new fence token, and whom it fenced out. */
const describe = (to: string, reset: Subscription.Reset): string =>
  [
    `reset ${reset.subscriptionId} to ${to}: checkpoint ${Format.cursor(reset.checkpoint.cursor)}` +
      (reset.checkpoint.delivered.size === 0 ? "" : ` (${reset.checkpoint.delivered.size} stream(s) delivered past it)`) +
      `, fence token ${reset.fenceToken}`,
    ...Option.match(reset.displaced, {
      onNone: () => [],
      onSome: (lease) => [
        `fenced out ${lease.workerId ?? "?"} (fence token ${lease.fenceToken}): its next checkpoint is refused and it returns to standby`
      ]
    })
  ].join("\n")

/**
 * The `reset` command.
 *
 * @since 0.2.0
 * @category commands
 */
export const reset = Command.make(
  "reset",
  {
    ...common,
    subscription: Args.text({ name: "subscription" }).pipe(Args.withDescription("the subscription (or projection) id")),
    to: Options.text("to").pipe(
      Options.withDescription(
        "where it restarts: start (every event), head (only events committed from now on), a global position (that event and everything delivered after it), or an ISO 8601 time (every event recorded at or after it)"
      )
    ),
    force: Options.boolean("force").pipe(
      Options.withDescription(
        "reset even while a worker holds the lease: the fence token is bumped, so that worker's next checkpoint is refused"
      )
    )
  },
  (options) =>
    withDatabase(options)(
      Effect.gen(function* () {
        const to = yield* Subscription.parseStart(options.to)
        const done = yield* Subscription.resetTo(options.subscription, to, { force: options.force })
        yield* Console.log(describe(options.to.trim(), done))
      }).pipe(Effect.provide(Layer.merge(PgSubscriptionStore.layer, PgLeaseStore.layer)))
    )
).pipe(
  Command.withDescription(
    "Move a subscription's checkpoint to the start, the head, a global position or a time; every stream is delivered in order from there. Refused while a worker holds its lease, unless --force (which fences that worker out)."
  )
)
