/**
 * Append throughput of the PostgreSQL event store, against a raw-Postgres
 * baseline, in one process on one server.
 *
 * Modes (every event carries the same ~100-byte JSON payload):
 *
 * - `per-event save`: load a stream once, then `record` one event and
 *   `EventStore.save` it, over and over: one round trip (and one commit) per
 *   event.
 * - `batched save`: `record` 100 events on a fresh root, then one
 *   `EventStore.save`; repeated over many streams.
 * - `appendMany`: one `EventStore.appendMany` call of 10 streams × 100
 *   pre-encoded events (one transaction per call).
 * - `saveMany`: the same shape through `EventStore.saveMany` (10 roots with
 *   100 recorded events each).
 * - `raw INSERT`: the baseline. A plain parameterised multi-row
 *   `INSERT … SELECT FROM unnest($1::uuid[], …)` of the same events into
 *   `bench_raw`, a table created `LIKE es_events INCLUDING ALL` (same
 *   columns, identity, defaults, constraints and indexes), through the same
 *   `SqlClient`, in batches of 100 (the size of `batched save`). A second raw
 *   row at 1,000 events per statement matches the size of an `appendMany`
 *   call, for information.
 *
 * Every mode is warmed up once, then timed for at least 2 s (and at least
 * 2,000 saves / 50,000 events); the modes run interleaved, 3 rounds, and
 * the table reports the median rate. Before each timed run the tables are
 * truncated and a CHECKPOINT is requested, so every run starts from the same
 * state. The ratios at the end are printed with their targets and an honest
 * PASS/MISS; the exit code is 0 either way (this is a measurement).
 *
 * Run it with `npm run bench`. With `DATABASE_URL` set it uses that server,
 * otherwise it starts an embedded PostgreSQL (`test/embeddedPostgres.ts`,
 * which runs with fsync=off and synchronous_commit=off; both sides of every
 * ratio run on the same server, and the header prints its settings). Either
 * way it creates a fresh database `bench_<random>` for the run and drops it
 * at the end. `BENCH_ROUNDS` (default 3) and `BENCH_SECONDS` (default 2)
 * override the number of rounds and the least time per timed run, for noisy
 * servers.
 *
 * @example
 * npm run bench
 * DATABASE_URL=postgres://postgres@127.0.0.1:5432/test npm run bench
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlError from "@effect/sql/SqlError"
import * as Aggregate from "@mire/core/Aggregate"
import * as AggregateRoot from "@mire/core/AggregateRoot"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import type { NewEvent } from "@mire/core/RecordedEvent"
import * as PgEventStore from "@mire/pg/PgEventStore"
import * as PgMigrations from "@mire/pg/PgMigrations"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import { availableParallelism, loadavg } from "node:os"
import { startEmbedded } from "../test/embeddedPostgres.js"

// ---------------------------------------------------------------------------
// Parameters

/** A positive number from the environment, or the default. */
const fromEnv = (name: string, fallback: number): number => {
  const value = Number(process.env[name])
  return Number.isFinite(value) && value > 0 ? value : fallback
}

const rounds = Math.round(fromEnv("BENCH_ROUNDS", 3))
const minSeconds = fromEnv("BENCH_SECONDS", 2)
const batchSize = 100
const manyStreams = 10
const perEventMinSaves = 2_000
const batchedMinEvents = 50_000
const warmupSeconds = 0.5
const targetBatchedVsRaw = 0.7
const targetBatchedVsPerEvent = 10

// ---------------------------------------------------------------------------
// The domain: one event type with a ~100-byte payload

const ItemAdded = Schema.TaggedStruct("ItemAdded", {
  sku: Schema.String,
  quantity: Schema.Number,
  unitPrice: Schema.Number,
  currency: Schema.String,
  note: Schema.String
})
type ItemAdded = typeof ItemAdded.Type

const Cart = Aggregate.make({
  category: "benchcart",
  events: ItemAdded,
  initial: { items: 0 },
  apply: (state: { readonly items: number }, _event: ItemAdded) => ({ items: state.items + 1 })
})

const payload = { sku: "SKU-0000042", quantity: 3, unitPrice: 1999, currency: "EUR", note: "benchmark payload, ~100 B" }
const event: ItemAdded = ItemAdded.make(payload)
const eventType = Cart.codec.types.get("ItemAdded")?.type ?? "benchcart.item-added"
const newEvent: NewEvent = { eventType, schemaVersion: 1, data: payload }
const payloadJson = JSON.stringify(payload)
const metadataJson = "{}"

// ---------------------------------------------------------------------------
// Server, database and layers

type Server = { readonly url: string; readonly source: string }

const redactUrl = (url: string): string => {
  const u = new URL(url)
  if (u.password !== "") u.password = "***"
  return u.toString()
}

const withDatabase = (url: string, database: string): string => {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

/** `DATABASE_URL`, or an embedded server stopped when the scope closes. */
const server = Effect.suspend(() => {
  const url = process.env.DATABASE_URL
  if (url !== undefined && url !== "") {
    return Effect.succeed<Server>({ url, source: `DATABASE_URL=${redactUrl(url)}` })
  }
  return Effect.acquireRelease(
    Effect.promise(() => startEmbedded()),
    (embedded) => Effect.promise(() => embedded.stop())
  ).pipe(Effect.map((embedded): Server => ({ url: embedded.url, source: `embedded PostgreSQL (${redactUrl(embedded.url)})` })))
})

/** Runs one statement on the server's maintenance database, with a short-lived client. */
const admin = (url: string, statement: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement)).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 }))
  )

/** A fresh database for this run, dropped when the scope closes. */
const database = (url: string) => {
  const name = `bench_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`
  return Effect.acquireRelease(
    Effect.as(admin(url, `CREATE DATABASE ${name}`), { name, url: withDatabase(url, name) }),
    () => admin(url, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).pipe(Effect.ignore)
  )
}

const storeLayer = (url: string) =>
  PgEventStore.layer.pipe(
    Layer.provideMerge(Layer.effectDiscard(PgMigrations.migrate().pipe(Effect.orDie))),
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(url), maxConnections: 4 }))
  )

// ---------------------------------------------------------------------------
// Modes

type BenchError = EventStore.AppendError | EventStore.LoadError | SqlError.SqlError
type BenchR = EventStore.EventStore | SqlClient.SqlClient

/** One step of a mode: writes some events, returns how many. */
type Step = Effect.Effect<number, BenchError, BenchR>

interface Mode {
  readonly key: string
  readonly label: string
  /** The least number of events a timed run writes. */
  readonly minEvents: number
  /** Untimed setup for one run (its stream ids start with `tag`); returns the step to repeat. */
  readonly start: (tag: string) => Effect.Effect<Step, BenchError, BenchR>
}

const recordN = (root: AggregateRoot.AggregateRoot<{ readonly items: number }, ItemAdded>, n: number) => {
  let next = root
  for (let i = 0; i < n; i++) next = AggregateRoot.record(next, event)
  return next
}

const perEvent: Mode = {
  key: "perEvent",
  label: "per-event save (1 event/save)",
  minEvents: perEventMinSaves,
  start: (tag) =>
    Effect.gen(function* () {
      let root = yield* EventStore.loadOrDefault(Cart, `${tag}-single`)
      return Effect.gen(function* () {
        root = yield* EventStore.save(AggregateRoot.record(root, event))
        return 1
      })
    })
}

const batched: Mode = {
  key: "batched",
  label: `batched save (${batchSize} events/save)`,
  minEvents: batchedMinEvents,
  start: (tag) =>
    Effect.sync(() => {
      let i = 0
      return Effect.gen(function* () {
        yield* EventStore.save(recordN(AggregateRoot.make(Cart, `${tag}-${i++}`), batchSize))
        return batchSize
      })
    })
}

const events100: ReadonlyArray<NewEvent> = Array.from({ length: batchSize }, () => newEvent)

const appendMany: Mode = {
  key: "appendMany",
  label: `appendMany (${manyStreams} streams x ${batchSize})`,
  minEvents: batchedMinEvents,
  start: (tag) =>
    Effect.sync(() => {
      let i = 0
      return Effect.gen(function* () {
        const requests = Array.from(
          { length: manyStreams },
          (): EventStore.AppendRequest => ({
            streamId: `${Cart.category}-${tag}-${i++}`,
            category: Cart.category,
            expected: ExpectedVersion.NoStream,
            events: events100
          })
        )
        yield* EventStore.appendMany(requests)
        return manyStreams * batchSize
      })
    })
}

const saveMany: Mode = {
  key: "saveMany",
  label: `saveMany (${manyStreams} roots x ${batchSize})`,
  minEvents: batchedMinEvents,
  start: (tag) =>
    Effect.sync(() => {
      let i = 0
      return Effect.gen(function* () {
        const roots = Array.from({ length: manyStreams }, () =>
          recordN(AggregateRoot.make(Cart, `${tag}-${i++}`), batchSize)
        )
        yield* EventStore.saveMany(roots)
        return manyStreams * batchSize
      })
    })
}

/** The baseline: one parameterised multi-row INSERT of `size` events of one stream. */
const raw = (size: number): Mode => ({
  key: `raw${size}`,
  label: `raw INSERT unnest (${size}/stmt)`,
  minEvents: batchedMinEvents,
  start: (tag) =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const versions = Array.from({ length: size }, (_, v) => v + 1)
      let i = 0
      return Effect.gen(function* () {
        const streamId = `${Cart.category}-${tag}-${i++}`
        const ids: Array<string> = []
        const streams: Array<string> = []
        const categories: Array<string> = []
        const types: Array<string> = []
        const schemaVersions: Array<number> = []
        const data: Array<string> = []
        const metadata: Array<string> = []
        for (let e = 0; e < size; e++) {
          ids.push(crypto.randomUUID())
          streams.push(streamId)
          categories.push(Cart.category)
          types.push(eventType)
          schemaVersions.push(1)
          data.push(JSON.stringify(payload))
          metadata.push(metadataJson)
        }
        yield* sql`
          INSERT INTO bench_raw (event_id, stream_id, stream_version, category, event_type, schema_version, data, metadata)
          SELECT * FROM unnest(
            ${ids}::uuid[], ${streams}::text[], ${versions}::int8[], ${categories}::text[],
            ${types}::text[], ${schemaVersions}::int4[], ${data}::jsonb[], ${metadata}::jsonb[])`
        return size
      })
    })
})

const rawBatched = raw(batchSize)
const rawMany = raw(batchSize * manyStreams)
const modes: ReadonlyArray<Mode> = [perEvent, batched, appendMany, saveMany, rawBatched, rawMany]

// ---------------------------------------------------------------------------
// Timing

interface Run {
  readonly events: number
  readonly seconds: number
  readonly rate: number
}

/** Same starting state for every run: empty tables, a fresh checkpoint. */
const reset = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`TRUNCATE es_events, es_streams, es_snapshots, bench_raw`
  // CHECKPOINT needs a superuser (or pg_checkpoint); without it runs are merely noisier.
  yield* sql`CHECKPOINT`.pipe(Effect.ignore)
})

const timeMode = (mode: Mode, tag: string, seconds: number, minEvents: number) =>
  Effect.gen(function* () {
    yield* reset
    const step = yield* mode.start(tag)
    let events = 0
    const started = performance.now()
    let elapsed = 0
    while (events < minEvents || elapsed < seconds) {
      events += yield* step
      elapsed = (performance.now() - started) / 1000
    }
    return { events, seconds: elapsed, rate: events / elapsed } satisfies Run
  })

const median = (runs: ReadonlyArray<Run>): Run => {
  const sorted = [...runs].sort((a, b) => a.rate - b.rate)
  return sorted[Math.floor(sorted.length / 2)]!
}

// ---------------------------------------------------------------------------
// Output

const fmt = (n: number, digits = 0): string =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })

const pad = (s: string, width: number, right = false): string => (right ? s.padStart(width) : s.padEnd(width))

const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>, rightFrom: number) => {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    `| ${cells.map((cell, c) => pad(cell, widths[c]!, c >= rightFrom)).join(" | ")} |`
  const rule = `|${widths.map((w, c) => (c >= rightFrom ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2))).join("|")}|`
  return [line(header), rule, ...rows.map(line)].join("\n")
}

// ---------------------------------------------------------------------------
// The program

const bench = (source: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE bench_raw (LIKE es_events INCLUDING ALL)`

    const [settings] = yield* sql<{
      readonly version: string
      readonly fsync: string
      readonly synchronous_commit: string
      readonly full_page_writes: string
      readonly wal_level: string
      readonly shared_buffers: string
      readonly max_wal_size: string
    }>`SELECT current_setting('server_version') AS version, current_setting('fsync') AS fsync,
         current_setting('synchronous_commit') AS synchronous_commit,
         current_setting('full_page_writes') AS full_page_writes, current_setting('wal_level') AS wal_level,
         current_setting('shared_buffers') AS shared_buffers, current_setting('max_wal_size') AS max_wal_size`
    console.log("mire append benchmark")
    console.log(`server:   ${source}`)
    if (settings !== undefined) {
      console.log(
        `settings: PostgreSQL ${settings.version}, fsync=${settings.fsync}, synchronous_commit=${settings.synchronous_commit}, ` +
          `full_page_writes=${settings.full_page_writes}, wal_level=${settings.wal_level}, ` +
          `shared_buffers=${settings.shared_buffers}, max_wal_size=${settings.max_wal_size}`
      )
    }
    const load = () => loadavg()[0]!.toFixed(2)
    console.log(
      `client:   Node ${process.version}, ${availableParallelism()} CPUs (1-min load average at start: ${load()}); payload ${Buffer.byteLength(payloadJson)} B JSON ` +
        `(${payloadJson}), metadata ${metadataJson}`
    )
    console.log(
      `method:   warm-up ${warmupSeconds} s per mode, then ${rounds} interleaved rounds of >= ${minSeconds} s per mode ` +
        `(>= ${fmt(perEventMinSaves)} saves / ${fmt(batchedMinEvents)} events); tables truncated + CHECKPOINT before each run; median reported\n`
    )

    const runId = Math.random().toString(36).slice(2, 7)
    for (const mode of modes) {
      yield* timeMode(mode, `w${runId}${mode.key}`, warmupSeconds, 0)
    }
    const results = new Map<string, Array<Run>>(modes.map((m) => [m.key, []]))
    for (let round = 1; round <= rounds; round++) {
      // Rotate the order each round so no mode always runs first or last.
      const order = modes.map((_, i) => modes[(i + round - 1) % modes.length]!)
      for (const mode of order) {
        const run = yield* timeMode(mode, `r${round}${runId}${mode.key}`, minSeconds, mode.minEvents)
        results.get(mode.key)!.push(run)
        console.log(
          `  round ${round}  ${pad(mode.label, 36)} ${pad(fmt(run.events), 8, true)} events  ` +
            `${pad(fmt(run.seconds, 2), 6, true)} s  ${pad(fmt(run.rate), 9, true)} events/s`
        )
      }
    }

    const medianOf = (mode: Mode) => median(results.get(mode.key)!)
    console.log(`\n1-min load average at end: ${load()} (this benchmark alone keeps about 2 busy: Node and one backend)\n`)
    console.log(
      table(
        ["mode", "events", "seconds", "events/s (median)", "rounds (events/s)"],
        modes.map((mode) => {
          const m = medianOf(mode)
          return [
            mode.label,
            fmt(m.events),
            fmt(m.seconds, 2),
            fmt(m.rate),
            results
              .get(mode.key)!
              .map((r) => fmt(r.rate))
              .join(" / ")
          ]
        }),
        1
      )
    )

    const rate = (mode: Mode) => medianOf(mode).rate
    const perRound = (a: Mode, b: Mode) =>
      results
        .get(a.key)!
        .map((run, i) => fmt(run.rate / results.get(b.key)![i]!.rate, 2))
        .join(" / ")
    const ratios: ReadonlyArray<{
      readonly name: string
      readonly a: Mode
      readonly b: Mode
      readonly target: number | undefined
    }> = [
      { name: `batched save / raw (${batchSize}/stmt)`, a: batched, b: rawBatched, target: targetBatchedVsRaw },
      { name: `appendMany / raw (${batchSize}/stmt)`, a: appendMany, b: rawBatched, target: targetBatchedVsRaw },
      { name: "batched save / per-event save", a: batched, b: perEvent, target: targetBatchedVsPerEvent },
      { name: `saveMany / raw (${batchSize}/stmt)`, a: saveMany, b: rawBatched, target: undefined },
      {
        name: `appendMany / raw (${batchSize * manyStreams}/stmt, same size)`,
        a: appendMany,
        b: rawMany,
        target: undefined
      }
    ]
    console.log("")
    console.log(
      table(
        ["ratio (of medians)", "value", "target", "result", "per round"],
        ratios.map(({ a, b, name, target }) => {
          const value = rate(a) / rate(b)
          return [
            name,
            `${fmt(value, 2)}x`,
            target === undefined ? "(info)" : `>= ${target}x`,
            target === undefined ? "-" : value >= target ? "PASS" : "MISS",
            perRound(a, b)
          ]
        }),
        1
      )
    )
  })

const main = Effect.scoped(
  Effect.gen(function* () {
    const { url, source } = yield* server
    const db = yield* database(url)
    yield* bench(`${source}, database ${db.name}`).pipe(Effect.provide(storeLayer(db.url)))
  })
)

Effect.runPromise(main).then(
  () => undefined,
  (error: unknown) => {
    console.error(error)
    process.exitCode = 1
  }
)
