/**
 * The subscriber side of the bench's wake-up latency workload, in its own
 * process (forked by `bench/main.ts` with an IPC channel). It follows one
 * category through a `Subscription` over `PgStore.layer`, as an application
 * replica would, with the default poll interval, and reports each delivered
 * event's stream id with the wall-clock time of its delivery.
 *
 * Environment: `BENCH_DB_URL`, `BENCH_CATEGORY`, `BENCH_SUBSCRIPTION`.
 * Messages to the parent: `{ type: "ready" }`, then
 * `{ type: "delivered", events: [[streamId, epochMillis], …] }` per batch.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Subscription from "@mire/core/Subscription"
import * as PgStore from "@mire/pg/PgStore"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"

const now = (): number => performance.timeOrigin + performance.now()

const send = (message: unknown) =>
  Effect.sync(() => {
    if (process.send !== undefined) process.send(message)
  })

const program = Effect.scoped(
  Effect.gen(function* () {
    const sub = yield* Subscription.make({
      subscriptionId: process.env.BENCH_SUBSCRIPTION ?? "bench-wakeup",
      categories: [process.env.BENCH_CATEGORY ?? "wake"],
      batchSize: 1000
    })
    yield* send({ type: "ready" })
    yield* sub.batches.pipe(
      Stream.runForEach((batch) => {
        const at = now()
        return send({ type: "delivered", events: batch.map((e) => [e.streamId, at]) })
      })
    )
  })
)

const layer = PgStore.layer.pipe(
  Layer.provideMerge(PgClient.layer({ url: Redacted.make(process.env.BENCH_DB_URL ?? ""), maxConnections: 2 }))
)

const fiber = Effect.runFork(program.pipe(Effect.provide(layer)))
fiber.addObserver((exit) => {
  const failed = Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)
  if (failed) console.error("[wakeup-subscriber]", Cause.pretty(exit.cause))
  process.exit(failed ? 1 : 0)
})
process.on("disconnect", () => {
  Effect.runFork(fiber.interruptAsFork(fiber.id()))
})
