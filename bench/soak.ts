/**
 * Soak (issue 11, item 9): writers keep creating new streams while a
 * subscription follows; heap after GC and event-loop delay must stay flat as
 * the number of streams grows.
 *
 * How to run (minutes long; not a test):
 *
 *   node --expose-gc --conditions=@mire/source --import tsx bench/soak.ts          # 180 s
 *   node --expose-gc --conditions=@mire/source --import tsx bench/soak.ts 600      # 10 minutes
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test node --expose-gc ... bench/soak.ts
 *
 * Without `DATABASE_URL` it starts an embedded PostgreSQL (fsync off) and
 * uses a fresh database, dropped at the end. `SOAK_WRITERS` (8) writer fibers
 * append one event at a time, paced by `SOAK_PAUSE_MS` (5 ms) between
 * appends; 30% of appends create a new stream, the rest go to one of the
 * writer's last 50 streams. One subscription (batch 100) follows every
 * category through `batches`, checkpointing after every batch, as a runner
 * does (`SOAK_RETAIN` sets its `retainStreams`, default 4096: set it low to
 * cross the bound within a short run). Every `SOAK_INTERVAL` seconds (15) it prints: streams created so
 * far, appends/s, events delivered/s, the subscription's lag, held events and
 * remembered streams, heap used after a forced GC, and the event loop's
 * delay (p50/p99/max, perf_hooks `monitorEventLoopDelay`, reset every
 * interval). At the end it compares the first and last intervals.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Subscription from "@mire/core/Subscription"
import * as PgMigrations from "@mire/pg/PgMigrations"
import * as PgStore from "@mire/pg/PgStore"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { admin, withDatabase } from "../test/database.js"
import { startEmbedded } from "../test/embeddedPostgres.js"

const seconds = Number(process.argv[2] ?? 180)
const writers = Number(process.env.SOAK_WRITERS ?? 8)
const pauseMs = Number(process.env.SOAK_PAUSE_MS ?? 5)
const intervalSeconds = Number(process.env.SOAK_INTERVAL ?? 15)
const retainStreams = process.env.SOAK_RETAIN === undefined ? undefined : Number(process.env.SOAK_RETAIN)
const gc: (() => void) | undefined = (globalThis as { gc?: () => void }).gc


interface Sample {
  readonly at: number
  readonly streams: number
  readonly heapMb: number
  readonly p99: number
}

const soak = Effect.gen(function* () {
  let streams = 0
  let appended = 0
  let delivered = 0
  let stop = false
  const ev = { eventType: "soak.e", schemaVersion: 1, data: { pad: "x".repeat(64) } }
  const writer = (w: number) =>
    Effect.gen(function* () {
      const mine: Array<string> = []
      let n = 0
      while (!stop) {
        if (mine.length === 0 || Math.random() < 0.3) {
          const id = `soak${w}-${n++}`
          yield* EventStore.append(id, "soak", ExpectedVersion.NoStream, [ev])
          mine.push(id)
          if (mine.length > 50) mine.shift()
          streams++
        } else {
          yield* EventStore.append(mine[Math.floor(Math.random() * mine.length)]!, "soak", ExpectedVersion.Any, [ev])
        }
        appended++
        yield* Effect.sleep(`${pauseMs} millis`)
      }
    })
  const sub = yield* Subscription.make({ subscriptionId: "soak", batchSize: 100, ...(retainStreams === undefined ? {} : { retainStreams }) })
  const follower = yield* sub.batches.pipe(
    Stream.runForEach((batch) => Effect.zipRight(Effect.sync(() => (delivered += batch.length)), sub.checkpoint())),
    Effect.fork
  )
  const writing = yield* Effect.fork(Effect.forEach(Array.from({ length: writers }, (_, w) => w), writer, { concurrency: "unbounded", discard: true }))
  const loop = monitorEventLoopDelay({ resolution: 10 })
  loop.enable()
  const samples: Array<Sample> = []
  const started = performance.now()
  let [lastAppended, lastDelivered, lastAt] = [0, 0, started]
  console.log(`soak: ${seconds} s, ${writers} writers paced ${pauseMs} ms, retain ${retainStreams ?? "default"}, interval ${intervalSeconds} s${gc === undefined ? " (no --expose-gc: heap not after GC)" : ""}`)
  while (performance.now() - started < seconds * 1000) {
    yield* Effect.sleep(`${intervalSeconds} seconds`)
    gc?.()
    const now = performance.now()
    const heapMb = process.memoryUsage().heapUsed / 2 ** 20
    const position = yield* sub.position
    const lag = yield* sub.lag
    const ms = (ns: number) => ns / 1e6
    const sample: Sample = { at: (now - started) / 1000, streams, heapMb, p99: ms(loop.percentile(99)) }
    samples.push(sample)
    const dt = (now - lastAt) / 1000
    console.log(
      `t=${sample.at.toFixed(0).padStart(4)} s  streams ${String(streams).padStart(7)}  ` +
        `appends ${Math.round((appended - lastAppended) / dt)}/s  delivered ${Math.round((delivered - lastDelivered) / dt)}/s  ` +
        `lag ${lag.events}  held ${position.held}  remembered ${position.remembered}  ` +
        `heap ${heapMb.toFixed(1)} MB  loop p50 ${ms(loop.percentile(50)).toFixed(1)} p99 ${sample.p99.toFixed(1)} max ${ms(loop.max).toFixed(1)} ms`
    )
    ;[lastAppended, lastDelivered, lastAt] = [appended, delivered, now]
    loop.reset()
  }
  stop = true
  yield* Fiber.join(writing)
  yield* Fiber.interrupt(follower)
  loop.disable()
  const [first, last] = [samples[0], samples[samples.length - 1]]
  if (first !== undefined && last !== undefined) {
    console.log(
      `first interval: ${first.streams} streams, heap ${first.heapMb.toFixed(1)} MB, loop p99 ${first.p99.toFixed(1)} ms; ` +
        `last: ${last.streams} streams, heap ${last.heapMb.toFixed(1)} MB, loop p99 ${last.p99.toFixed(1)} ms`
    )
  }
})

const main = Effect.gen(function* () {
  const embedded = process.env.DATABASE_URL ? undefined : yield* Effect.promise(() => startEmbedded())
  const server = process.env.DATABASE_URL ?? embedded!.url
  const name = `bench_soak_${Date.now().toString(36)}`
  yield* Effect.promise(() => admin(server, `CREATE DATABASE ${name}`))
  const layer = PgStore.layer.pipe(
    Layer.provideMerge(Layer.effectDiscard(PgMigrations.migrate().pipe(Effect.orDie))),
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(withDatabase(server, name)), maxConnections: writers + 4 }))
  )
  yield* Effect.scoped(soak).pipe(Effect.provide(layer), Effect.orDie)
  yield* Effect.promise(() => admin(server, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  if (embedded !== undefined) yield* Effect.promise(() => embedded.stop())
})

Effect.runPromise(main).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
