/**
 * Catch-up over many streams vs few (issue 11, item 9): the per-poll cost and
 * the memory of a subscription must not grow with the number of streams seen.
 *
 * How to run:
 *
 *   node --conditions=@mire/source --import tsx bench/catchup.ts            # 1,000,000 events per log
 *   node --conditions=@mire/source --import tsx bench/catchup.ts 200000     # a smaller log
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test node --conditions=@mire/source --import tsx bench/catchup.ts
 *
 * Without `DATABASE_URL` it starts an embedded PostgreSQL (fsync off). In a
 * fresh database it seeds, by plain SQL (10,000 rows per transaction), N
 * events in N distinct streams (category `wide`, one event per stream) and N
 * events in 1,000 streams (category `narrow`), then `VACUUM ANALYZE`. Each
 * category is then caught up from the start by `Subscription.make({
 * categories: [c], batchSize: 1000 })`: `poll` until N events are delivered,
 * with a `checkpoint()` after every page (as a runner does). It prints both
 * throughputs (events/s), their ratio, the time of the slowest poll +
 * checkpoint, and how many streams the subscription remembers at the end
 * (bounded by `retainStreams` plus what is held or past the cursor).
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as PgMigrations from "@mire/pg/PgMigrations"
import * as PgStore from "@mire/pg/PgStore"
import * as HoldBack from "@mire/core/HoldBack"
import * as Subscription from "@mire/core/Subscription"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import pg from "pg"
import { admin, withDatabase } from "../test/database.js"
import { startEmbedded } from "../test/embeddedPostgres.js"

const events = Number(process.argv[2] ?? 1_000_000)
const chunk = 10_000


const seed = async (url: string) => {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    const started = performance.now()
    for (let lo = 0; lo < events; lo += chunk) {
      const hi = Math.min(events, lo + chunk) - 1
      await client.query(
        `INSERT INTO es_events (event_id, stream_id, stream_version, category, event_type, data)
         SELECT gen_random_uuid(), 'wide-' || g, 1, 'wide', 'bench.e', jsonb_build_object('i', g)
         FROM generate_series($1::int, $2::int) g`,
        [lo, hi]
      )
      await client.query(
        `INSERT INTO es_events (event_id, stream_id, stream_version, category, event_type, data)
         SELECT gen_random_uuid(), 'narrow-' || (g % 1000), g / 1000 + 1, 'narrow', 'bench.e', jsonb_build_object('i', g)
         FROM generate_series($1::int, $2::int) g`,
        [lo, hi]
      )
    }
    await client.query(
      `INSERT INTO es_streams (stream_id, category, version)
       SELECT stream_id, category, max(stream_version) FROM es_events GROUP BY stream_id, category`
    )
    await client.query("VACUUM ANALYZE")
    console.log(`seeded 2 x ${events} events in ${((performance.now() - started) / 1000).toFixed(1)} s`)
  } finally {
    await client.end()
  }
}

const catchUp = (category: string) =>
  Effect.scoped(
    Effect.gen(function* () {
      const sub = yield* Subscription.make({ subscriptionId: `catchup-${category}`, categories: [category], batchSize: 1000 })
      const started = performance.now()
      let delivered = 0
      let slowest = 0
      while (delivered < events) {
        const t = performance.now()
        delivered += (yield* sub.poll).length
        yield* sub.checkpoint()
        slowest = Math.max(slowest, performance.now() - t)
      }
      const seconds = (performance.now() - started) / 1000
      const { held, remembered } = yield* sub.position
      return { rate: delivered / seconds, seconds, slowest, held, remembered }
    })
  )

const main = Effect.gen(function* () {
  const embedded = process.env.DATABASE_URL ? undefined : yield* Effect.promise(() => startEmbedded())
  const server = process.env.DATABASE_URL ?? embedded!.url
  const name = `bench_catchup_${Date.now().toString(36)}`
  yield* Effect.promise(() => admin(server, `CREATE DATABASE ${name}`))
  const url = withDatabase(server, name)
  const layer = PgStore.layer.pipe(
    Layer.provideMerge(Layer.effectDiscard(PgMigrations.migrate().pipe(Effect.orDie))),
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(url), maxConnections: 4 }))
  )
  yield* Effect.gen(function* () {
    yield* Effect.promise(() => seed(url))
    const results: Record<string, { rate: number }> = {}
    for (const [category, streams] of [
      ["wide", events],
      ["narrow", 1000]
    ] as const) {
      const r = yield* catchUp(category)
      results[category] = r
      console.log(
        `${category.padEnd(6)} ${events} events in ${streams} streams: ${Math.round(r.rate)} events/s ` +
          `(${r.seconds.toFixed(1)} s; slowest poll+checkpoint ${r.slowest.toFixed(1)} ms; held ${r.held}; ` +
          `streams remembered ${r.remembered}, retained at most ${HoldBack.defaultRetain})`
      )
    }
    console.log(`ratio wide/narrow: ${(results.wide!.rate / results.narrow!.rate).toFixed(2)}`)
  }).pipe(Effect.provide(layer), Effect.orDie)
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
