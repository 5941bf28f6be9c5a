/**
 * `npm run bench`: every workload of issue 12's targets table, mire against
 * an honest raw-Postgres baseline, in one process against one server, in a
 * fresh database per run (migrated with `PgMigrations.migrate`, dropped at
 * the end).
 *
 * mire is used through its public API as an application would use it
 * (`PgStore.layer`, `EventStore`, `Subscription`, `ProjectionRunner`,
 * snapshots). The raw side (`bench/raw.ts`) is plain `pg` on the minimal
 * commit-safe table `raw_events`, doing the same logical work by the
 * shortest SQL. Each workload runs `BENCH_ROUNDS` rounds (default 3), mire
 * and raw alternating which goes first; the table gives the medians and the
 * median of the per-round ratios with their spread (min–max), and the
 * issue's target with PASS/MISS. The exit code is 0 whatever the targets
 * say (this is a measurement). Knobs: see `bench/README.md`.
 *
 * @example
 * npm run bench
 * DATABASE_URL=postgres://postgres@127.0.0.1:5432/test npm run bench
 * BENCH_ONLY=read,load BENCH_ROUNDS=1 npm run bench
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Aggregate from "@mire/core/Aggregate"
import * as AggregateRoot from "@mire/core/AggregateRoot"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Projection from "@mire/core/Projection"
import * as ProjectionRunner from "@mire/core/ProjectionRunner"
import type { NewEvent } from "@mire/core/RecordedEvent"
import * as Subscription from "@mire/core/Subscription"
import * as PgMigrations from "@mire/pg/PgMigrations"
import * as PgEventStore from "@mire/pg/PgEventStore"
import * as PgStore from "@mire/pg/PgStore"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { type ChildProcess, fork } from "node:child_process"
import { availableParallelism, loadavg } from "node:os"
import { fileURLToPath } from "node:url"
import { PerformanceObserver } from "node:perf_hooks"
import type pg from "pg"
import { startEmbedded } from "../test/embeddedPostgres.js"
import * as Raw from "./raw.js"
import { counted as withStatementCount } from "../test/statements.js"

// ---------------------------------------------------------------------------
// Knobs (environment variables; defaults are the issue's sizes)

const knob = (name: string, fallback: number): number => {
  const value = Number(process.env[name])
  return Number.isFinite(value) && value > 0 ? value : fallback
}

const rounds = Math.round(knob("BENCH_ROUNDS", 3))
const appendSeconds = knob("BENCH_SECONDS", 2)
const readSeconds = knob("BENCH_READ_SECONDS", 1)
const writers = Math.round(knob("BENCH_CONCURRENCY", 16))
const batchEvents = Math.round(knob("BENCH_BATCH", 1000))
const manyStreams = Math.round(knob("BENCH_MANY_STREAMS", 10))
const manyEvents = Math.round(knob("BENCH_MANY_EVENTS", 100))
const readEvents = Math.round(knob("BENCH_READ_EVENTS", 10_000))
const catchupEvents = Math.round(knob("BENCH_CATCHUP_EVENTS", 100_000))
const catchupBatch = Math.round(knob("BENCH_CATCHUP_BATCH", 1000))
const catchupSeconds = knob("BENCH_CATCHUP_MAX_SECONDS", 30)
const wakeSeconds = knob("BENCH_WAKE_SECONDS", 5)
const warmSeconds = Math.min(0.5, appendSeconds / 2)
const only = new Set((process.env.BENCH_ONLY ?? "").split(",").filter((s) => s !== ""))
const selected = (key: string) => only.size === 0 || only.has(key)

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

interface CartState {
  readonly items: number
  readonly total: number
}
const CartState = Schema.Struct({ items: Schema.Number, total: Schema.Number })
const initial: CartState = { items: 0, total: 0 }
const apply = (state: CartState, event: ItemAdded): CartState => ({
  items: state.items + 1,
  total: state.total + event.quantity * event.unitPrice
})

const Cart = Aggregate.make({ category: "benchcart", events: ItemAdded, initial, apply })

/** The same cart, snapshotted: a snapshot whenever a save crosses a multiple of the read size. */
const SnapCart = Aggregate.make({
  category: "benchsnap",
  events: ItemAdded,
  initial,
  apply,
  snapshot: { schema: CartState, version: 1, every: readEvents }
})

const payload = { sku: "SKU-0000042", quantity: 3, unitPrice: 1999, currency: "EUR", note: "benchmark payload, ~100 B" }
const item: ItemAdded = ItemAdded.make(payload)
const eventType = Cart.codec.types.get("ItemAdded")?.type ?? "benchcart.item-added"
const newEvent: NewEvent = { eventType, schemaVersion: 1, data: payload }
const payloadJson = JSON.stringify(payload)

/** The raw fold: the same arithmetic over the parsed JSON, no decoding. */
const rawApply = (state: CartState, data: Raw.RawData): CartState => ({
  items: state.items + 1,
  total: state.total + data.quantity * data.unitPrice
})

const range = (n: number) => Array.from({ length: n }, (_, i) => i)
const repeat = <A>(n: number, a: A): ReadonlyArray<A> => Array.from({ length: n }, () => a)

// ---------------------------------------------------------------------------
// Errors

class RawError extends Data.TaggedError("RawError")<{ readonly cause: unknown }> {}
class BenchFailure extends Data.TaggedError("BenchFailure")<{ readonly message: string }> {}

const raw = <A>(f: () => Promise<A>) => Effect.tryPromise({ try: f, catch: (cause) => new RawError({ cause }) })

const check = (ok: boolean, message: string) => (ok ? Effect.void : Effect.fail(new BenchFailure({ message })))

// ---------------------------------------------------------------------------
// Server and database

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
  if (url !== undefined && url !== "") return Effect.succeed({ url, source: `DATABASE_URL=${redactUrl(url)}` })
  return Effect.acquireRelease(
    Effect.promise(() => startEmbedded()),
    (embedded) => Effect.promise(() => embedded.stop())
  ).pipe(Effect.map((embedded) => ({ url: embedded.url, source: `embedded PostgreSQL (${redactUrl(embedded.url)})` })))
})

/** One statement on the server's maintenance database, with a short-lived plain client. */
const admin = (url: string, statement: string) =>
  Effect.acquireUseRelease(
    Effect.sync(() => Raw.pool(url, 1)),
    (db) => raw(() => db.query(statement)),
    (db) => Effect.promise(() => db.end())
  )

/** A fresh database for this run, dropped when the scope closes. */
const database = (url: string) => {
  const name = `bench_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`
  return Effect.acquireRelease(
    Effect.as(admin(url, `CREATE DATABASE ${name}`), { name, url: withDatabase(url, name) }),
    () => admin(url, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).pipe(Effect.ignore)
  )
}

/** `BENCH_COALESCE_STATEMENTS`: the store's coalesced append statements in flight (else its default). */
const coalesceStatements = process.env.BENCH_COALESCE_STATEMENTS === undefined ? undefined : knob("BENCH_COALESCE_STATEMENTS", 2)

const mireLayer = (url: string) =>
  PgStore.layer.pipe(
    Layer.provide(coalesceStatements === undefined ? Layer.empty : Layer.orDie(PgEventStore.layerCoalescing({ statements: coalesceStatements }))),
    Layer.provideMerge(Layer.effectDiscard(PgMigrations.migrate().pipe(Effect.orDie))),
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(url), maxConnections: writers + 4 }))
  )

// ---------------------------------------------------------------------------
// Measuring

const now = () => performance.now()

/** This process's garbage-collection pauses as `perf_hooks` reports them: [start, duration] in ms. */
const gcPauses: Array<readonly [number, number]> = []
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) gcPauses.push([entry.startTime, entry.duration])
}).observe({ entryTypes: ["gc"] })

/**
 * The share of `[from, to]` the process spent paused in garbage collection (main thread). Read a
 * macrotask later: the observer is told of a pause after it ends, not during the run.
 */
const gcShare = (from: number, to: number) =>
  Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve))).pipe(
    Effect.map(() => {
      let paused = 0
      for (const [start, duration] of gcPauses) if (start >= from && start < to) paused += duration
      gcPauses.length = 0
      return to > from ? paused / (to - from) : 0
    })
  )

/** Runs `step(worker)` on `workers` concurrent fibers for `seconds`; events per second. */
const rateMire = <E, R>(seconds: number, workers: number, step: (worker: number) => Effect.Effect<number, E, R>) =>
  Effect.gen(function* () {
    const started = now()
    const deadline = started + seconds * 1000
    let events = 0
    yield* Effect.forEach(
      range(workers),
      (w) =>
        Effect.gen(function* () {
          // Not `events += yield* step(w)`: that reads `events` before the step suspends, so
          // concurrent workers would overwrite each other's counts.
          while (now() < deadline) {
            const n = yield* step(w)
            events += n
          }
        }),
      { concurrency: "unbounded", discard: true }
    )
    return events / ((now() - started) / 1000)
  })

/** The same with plain promises: `workers` concurrent loops. */
const rateRaw = (seconds: number, workers: number, step: (worker: number) => Promise<number>) =>
  raw(async () => {
    const started = now()
    const deadline = started + seconds * 1000
    let events = 0
    await Promise.all(
      range(workers).map(async (w) => {
        while (now() < deadline) {
          const n = await step(w)
          events += n
        }
      })
    )
    return events / ((now() - started) / 1000)
  })

/** Milliseconds per call of `op`, repeated for at least `seconds` and 3 calls, after one untimed call. */
const perOp = <E, R>(seconds: number, op: Effect.Effect<unknown, E, R>) =>
  Effect.gen(function* () {
    yield* op
    const started = now()
    let calls = 0
    while (calls < 3 || now() - started < seconds * 1000) {
      yield* op
      calls++
    }
    return (now() - started) / calls
  })

/** Milliseconds one run of `op` takes. */
const once = <A, E, R>(op: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const started = now()
    const value = yield* op
    return { millis: now() - started, value }
  })

/** How many SQL statements one run of `op` sends. */
const countStatements = <A, E, R>(op: Effect.Effect<A, E, R>) => Effect.map(withStatementCount(op), ([statements]) => statements)

// ---------------------------------------------------------------------------
// Results

type Kind = "rate" | "time"

interface Result {
  readonly key: string
  readonly label: string
  readonly kind: Kind
  /** rate: mire ÷ raw ≥ target; time: mire ÷ raw ≤ target; none for a diagnostic line. */
  readonly target: number | undefined
  readonly mire: ReadonlyArray<number>
  readonly raw: ReadonlyArray<number>
  /** Per run, the share of its time spent in garbage-collection pauses. */
  readonly gc: { readonly mire: ReadonlyArray<number>; readonly raw: ReadonlyArray<number> }
  readonly note: string
}

interface Latency {
  readonly p50: ReadonlyArray<number>
  readonly p99: ReadonlyArray<number>
  readonly note: string
}

const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

const percentile = (xs: ReadonlyArray<number>, p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? Number.NaN
}

const fmt = (n: number, digits = 0): string =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })

const log = (line: string) => Effect.sync(() => console.log(line))

/**
 * Runs one comparison: `rounds` rounds of mire and raw, alternating which
 * goes first; `before` runs before every run (and its warm-up), and a
 * warm-up of `warmup` seconds precedes each timed run.
 */
const compare = <E1, R1, E2, R2, E3 = never, R3 = never>(spec: {
  readonly key: string
  readonly label: string
  readonly kind: Kind
  readonly target: number | undefined
  readonly before?: Effect.Effect<void, E3, R3>
  readonly warmup?: number
  /** Seconds each timed run takes (the append workloads' `BENCH_SECONDS` when not given). */
  readonly seconds?: number
  readonly mire: (round: number, seconds: number) => Effect.Effect<number, E1, R1>
  readonly raw: (round: number, seconds: number) => Effect.Effect<number, E2, R2>
  readonly note?: string
}) =>
  Effect.gen(function* () {
    const mire: Array<number> = []
    const rawRuns: Array<number> = []
    const gc = { mire: [] as Array<number>, raw: [] as Array<number> }
    const unit = spec.kind === "rate" ? "events/s" : "ms"
    const run = (side: "mire" | "raw", round: number, seconds: number) =>
      side === "mire" ? spec.mire(round, seconds) : spec.raw(round, seconds)
    for (let round = 1; round <= rounds; round++) {
      const order = round % 2 === 1 ? (["mire", "raw"] as const) : (["raw", "mire"] as const)
      for (const side of order) {
        if (spec.warmup !== undefined) {
          if (spec.before !== undefined) yield* spec.before
          yield* run(side, round + 1000, spec.warmup)
        }
        if (spec.before !== undefined) yield* spec.before
        const started = now()
        const value = yield* run(side, round, spec.seconds ?? appendSeconds)
        gc[side].push(yield* gcShare(started, now()))
        if (side === "mire") mire.push(value)
        else rawRuns.push(value)
        yield* log(`  ${spec.key.padEnd(10)} round ${round} ${side.padEnd(4)} ${fmt(value, spec.kind === "rate" ? 0 : 2).padStart(10)} ${unit}`)
      }
    }
    return { key: spec.key, label: spec.label, kind: spec.kind, target: spec.target, mire, raw: rawRuns, gc, note: spec.note ?? "" } satisfies Result
  })

// ---------------------------------------------------------------------------
// Fixtures

/**
 * Empties every table, on a short-lived client of its own: on PostgreSQL 15 the connection that
 * truncated a table pays about 3x the server CPU for its later inserts into it, so truncating on
 * the raw pool would slow the raw side down (measured: 1,000-row inserts 28-31 ms against 10-11 ms).
 */
const truncate = (db: pg.Pool) =>
  admin(
    db.options.connectionString ?? "",
    `TRUNCATE es_events, es_streams, es_snapshots, es_subscriptions, raw_events, raw_snapshots, raw_checkpoints, bench_totals;
     CHECKPOINT`
  )

const vacuum = (db: pg.Pool) => raw(() => db.query("VACUUM ANALYZE es_events, es_streams, es_snapshots, raw_events, raw_snapshots"))

/** `total` events in streams of `perStream` through `appendMany` (10 streams per call), and the same rows raw. */
const seedLog = (db: pg.Pool, prefix: string, total: number, perStream: number) =>
  Effect.gen(function* () {
    const streams = Math.ceil(total / perStream)
    for (let s = 0; s < streams; s += 10) {
      const ids = range(Math.min(10, streams - s)).map((i) => `${Cart.category}-${prefix}${s + i}`)
      yield* EventStore.appendMany(
        ids.map((streamId) => ({
          streamId,
          category: Cart.category,
          expected: ExpectedVersion.NoStream,
          events: repeat(perStream, newEvent)
        }))
      )
      yield* raw(() =>
        Raw.appendBatch(
          db,
          { streams: ids.flatMap((id) => repeat(perStream, id)), versions: ids.flatMap(() => range(perStream).map((v) => v + 1)) },
          eventType,
          payloadJson
        )
      )
    }
  })

// ---------------------------------------------------------------------------
// Workloads

const appends = (db: pg.Pool, runId: string) =>
  Effect.gen(function* () {
    const reset = truncate(db)
    const tag = (round: number, side: string) => `${runId}r${round}${side}`
    const results: Array<Result> = []

    // The diagnostic `-alone` variants send every append as its own statement (coalescing off).
    type Store = (
      effect: Effect.Effect<number, EventStore.AppendError, EventStore.EventStore>
    ) => Effect.Effect<number, EventStore.AppendError, EventStore.EventStore | SqlClient.SqlClient>
    const alone: Store = (effect) =>
      Effect.provide(effect, PgEventStore.layer.pipe(Layer.provide(PgEventStore.layerCoalescing({ statements: 0 })), Layer.orDie))
    // The raw side of the new-stream appends (and of their `-sql` line): one INSERT per append.
    const rawNewStreams = (round: number, seconds: number) => {
      let n = 0
      return rateRaw(seconds, writers, (w) =>
        Raw.appendOne(db, `${Cart.category}-${tag(round, "r")}w${w}n${n++}`, 1, eventType, payloadJson)
      )
    }
    const variants: ReadonlyArray<{ suffix: string; label: string; target: number | undefined; store: Store }> = [
      { suffix: "", label: "", target: 0.6, store: (effect) => effect },
      { suffix: "-alone", label: ", each its own statement (diagnostic)", target: undefined, store: alone }
    ]
    for (const variant of variants) {
    if (selected(`append-new${variant.suffix}`)) {
      results.push(
        yield* compare({
          key: `append-new${variant.suffix}`,
          label: `1-event append, new streams, ${writers} concurrent${variant.label}`,
          kind: "rate",
          target: variant.target,
          before: reset,
          warmup: warmSeconds,
          mire: (round, seconds) => {
            let n = 0
            return variant.store(rateMire(seconds, writers, (w) =>
              EventStore.append(`${Cart.category}-${tag(round, "m")}w${w}n${n++}`, Cart.category, ExpectedVersion.NoStream, [
                newEvent
              ]).pipe(Effect.as(1))
            ))
          },
          raw: rawNewStreams
        })
      )
    }

    if (selected(`append-hot${variant.suffix}`)) {
      results.push(
        yield* compare({
          key: `append-hot${variant.suffix}`,
          label: `1-event append, exact version, ${writers} hot streams${variant.label}`,
          kind: "rate",
          target: variant.target,
          before: reset,
          warmup: warmSeconds,
          mire: (round, seconds) => {
            const versions = range(writers).map(() => 0)
            return variant.store(rateMire(seconds, writers, (w) =>
              EventStore.append(
                `${Cart.category}-${tag(round, "m")}hot${w}`,
                Cart.category,
                ExpectedVersion.Exact(versions[w]!),
                [newEvent]
              ).pipe(Effect.tap(() => Effect.sync(() => versions[w]!++)), Effect.as(1))
            ))
          },
          raw: (round, seconds) => {
            const versions = range(writers).map(() => 0)
            return rateRaw(seconds, writers, async (w) => {
              const n = await Raw.appendOne(db, `${Cart.category}-${tag(round, "r")}hot${w}`, versions[w]! + 1, eventType, payloadJson)
              versions[w]!++
              return n
            })
          }
        })
      )
    }

    }

    // The stack's ceiling (diagnostic): the raw side's INSERT, sent through `@effect/sql` from 16
    // fibers, one statement per append, as an Effect application without mire would send it.
    if (selected("append-new-sql")) {
      const sql = yield* SqlClient.SqlClient
      results.push(
        yield* compare({
          key: "append-new-sql",
          label: `1-event append, new streams, ${writers} concurrent: the raw INSERT through @effect/sql (diagnostic)`,
          kind: "rate",
          target: undefined,
          before: reset,
          warmup: warmSeconds,
          mire: (round, seconds) => {
            let n = 0
            return rateMire(seconds, writers, (w) =>
              Effect.as(
                sql`INSERT INTO raw_events (stream_id, stream_version, event_type, data)
                    VALUES (${`${Cart.category}-${tag(round, "s")}w${w}n${n++}`}, 1, ${eventType}, ${payloadJson})`,
                1
              )
            )
          },
          raw: rawNewStreams
        })
      )
    }

    if (selected("batch")) {
      const events = repeat(batchEvents, newEvent)
      const versions = range(batchEvents).map((v) => v + 1)
      results.push(
        yield* compare({
          key: "batch",
          label: `${fmt(batchEvents)}-event batch, one stream`,
          kind: "rate",
          target: 0.7,
          before: reset,
          warmup: warmSeconds,
          mire: (round, seconds) => {
            let n = 0
            return rateMire(seconds, 1, () =>
              EventStore.append(`${Cart.category}-${tag(round, "m")}b${n++}`, Cart.category, ExpectedVersion.NoStream, events).pipe(
                Effect.as(batchEvents)
              )
            )
          },
          raw: (round, seconds) => {
            let n = 0
            return rateRaw(seconds, 1, () => {
              const id = `${Cart.category}-${tag(round, "r")}b${n++}`
              return Raw.appendBatch(db, { streams: repeat(batchEvents, id), versions }, eventType, payloadJson)
            })
          }
        })
      )
    }

    if (selected("many")) {
      const events = repeat(manyEvents, newEvent)
      const versions = range(manyStreams).flatMap(() => range(manyEvents).map((v) => v + 1))
      results.push(
        yield* compare({
          key: "many",
          label: `appendMany ${manyStreams} streams x ${manyEvents}, one transaction`,
          kind: "rate",
          target: 0.7,
          before: reset,
          warmup: warmSeconds,
          mire: (round, seconds) => {
            let n = 0
            return rateMire(seconds, 1, () => {
              const call = n++
              return EventStore.appendMany(
                range(manyStreams).map((s) => ({
                  streamId: `${Cart.category}-${tag(round, "m")}c${call}s${s}`,
                  category: Cart.category,
                  expected: ExpectedVersion.NoStream,
                  events
                }))
              ).pipe(Effect.as(manyStreams * manyEvents))
            })
          },
          raw: (round, seconds) => {
            let n = 0
            return rateRaw(seconds, 1, () => {
              const call = n++
              const streams = range(manyStreams).flatMap((s) => repeat(manyEvents, `${Cart.category}-${tag(round, "r")}c${call}s${s}`))
              return Raw.appendBatch(db, { streams, versions }, eventType, payloadJson)
            })
          }
        })
      )
    }
    return results
  })

interface ReadOp {
  readonly label: string
  /** None for a diagnostic line. */
  readonly target: number | undefined
  readonly mire: Effect.Effect<unknown, EventStore.LoadError | BenchFailure, EventStore.EventStore>
  readonly raw: Effect.Effect<unknown, RawError | BenchFailure>
}

const reads = (db: pg.Pool) =>
  Effect.gen(function* () {
    const results: Array<Result> = []
    const keys = ["read", "read-stream", "read-sql", "load", "load1", "load1-sql", "snapshot"].filter(selected)
    if (keys.length === 0) return results
    yield* truncate(db)
    const longId = "long"
    const oneId = "one"
    const longStream = `${Cart.category}-${longId}`
    const oneStream = `${Cart.category}-${oneId}`
    const snapStream = `${SnapCart.category}-${longId}`
    // The long stream, the 1-event stream and the snapshotted stream, in both logs.
    let root = AggregateRoot.make(Cart, longId)
    let snapRoot = AggregateRoot.make(SnapCart, longId)
    while (root.version < readEvents) {
      const n = Math.min(1000, readEvents - root.version)
      const batch = repeat(n, item)
      root = yield* EventStore.save(AggregateRoot.record(root, ...batch))
      snapRoot = yield* EventStore.saveSnapshotting(AggregateRoot.record(snapRoot, ...batch))
    }
    yield* EventStore.save(AggregateRoot.record(AggregateRoot.make(Cart, oneId), item))
    const versions = range(readEvents).map((v) => v + 1)
    yield* raw(() => Raw.appendBatch(db, { streams: repeat(readEvents, longStream), versions }, eventType, payloadJson))
    yield* raw(() => Raw.appendBatch(db, { streams: repeat(readEvents, snapStream), versions }, eventType, payloadJson))
    yield* raw(() => Raw.appendBatch(db, { streams: [oneStream], versions: [1] }, eventType, payloadJson))
    yield* raw(() =>
      db.query("INSERT INTO raw_snapshots (stream_id, version, state) VALUES ($1, $2, $3)", [
        snapStream,
        readEvents,
        JSON.stringify(snapRoot.state)
      ])
    )
    const sql = yield* SqlClient.SqlClient
    const snapshots = yield* sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM es_snapshots`
    yield* check(snapshots[0]?.n === 1, `expected one snapshot at v${readEvents}, found ${snapshots[0]?.n}`)
    yield* vacuum(db)

    const expectVersion = (version: number) => (loaded: Option.Option<{ readonly version: number }>) =>
      check(Option.isSome(loaded) && loaded.value.version === version, `loaded the wrong version (expected ${version})`)

    // The raw sides of `read` and `load1`, which their `-sql` lines share.
    const rawRead = raw(() => Raw.readStream(db, longStream)).pipe(Effect.tap((rows) => check(rows.length === readEvents, "short read")))
    const rawLoad1 = raw(() => Raw.load(db, oneStream, initial, rawApply)).pipe(Effect.tap((l) => check(l.version === 1, "raw load1: wrong version")))
    // The stack's ceiling (diagnostic): the raw side's statement through `@effect/sql`.
    const rawSelect = (streamId: string) =>
      sql<Raw.RawRow>`SELECT * FROM raw_events WHERE stream_id = ${streamId} ORDER BY stream_version`.pipe(
        Effect.mapError((error) => new BenchFailure({ message: error.message }))
      )
    const ops: Record<string, ReadOp> = {
      "read-sql": {
        label: `read a ${fmt(readEvents)}-event stream: the raw SELECT through @effect/sql (diagnostic, time)`,
        target: undefined,
        mire: rawSelect(longStream).pipe(Effect.tap((rows) => check(rows.length === readEvents, "short read"))),
        raw: rawRead
      },
      "load1-sql": {
        label: "load a 1-event aggregate: the raw SELECT and fold through @effect/sql (diagnostic, time)",
        target: undefined,
        mire: rawSelect(oneStream).pipe(
          Effect.map((rows) => Raw.fold(rows, initial, rawApply)),
          Effect.tap((l) => check(l.version === 1, "load1 through @effect/sql: wrong version"))
        ),
        raw: rawLoad1
      },
      read: {
        label: `read a ${fmt(readEvents)}-event stream (time)`,
        target: 1.2,
        mire: EventStore.readStreamEvents(longStream).pipe(Effect.tap((events) => check(events.length === readEvents, "short read"))),
        raw: rawRead
      },
      "read-stream": {
        label: `read a ${fmt(readEvents)}-event stream as a Stream, collected (diagnostic, time)`,
        target: undefined,
        mire: Stream.runCollect(EventStore.readStream(longStream)).pipe(
          Effect.tap((c) => check(c.length === readEvents, "short read"))
        ),
        raw: rawRead
      },
      load: {
        label: `load + fold a ${fmt(readEvents)}-event aggregate (time)`,
        target: 1.3,
        mire: EventStore.load(Cart, longId).pipe(Effect.tap(expectVersion(readEvents))),
        raw: raw(() => Raw.load(db, longStream, initial, rawApply)).pipe(
          Effect.tap((l) => check(l.version === readEvents, "raw load: wrong version"))
        )
      },
      load1: {
        label: "load a 1-event aggregate (time)",
        target: 2,
        mire: EventStore.load(Cart, oneId).pipe(Effect.tap(expectVersion(1))),
        raw: rawLoad1
      },
      snapshot: {
        label: `loadSnapshotted, ${fmt(readEvents)} events, snapshot at head (time)`,
        target: 2,
        mire: EventStore.loadSnapshotted(SnapCart, longId).pipe(Effect.tap(expectVersion(readEvents))),
        raw: raw(() => Raw.loadSnapshotted<CartState>(db, snapStream, rawApply)).pipe(
          Effect.tap((l) => check(l?.version === readEvents, "raw snapshot load: wrong version"))
        )
      }
    }
    for (const key of keys) {
      const op = ops[key]
      if (op === undefined) continue
      const statements = yield* countStatements(op.mire)
      results.push(
        yield* compare({
          key,
          label: op.label,
          kind: "time",
          target: op.target,
          // An untimed run of the same length first: from cold, a 1-event load takes about 2 s of
          // calls to reach its steady time (bench/README.md).
          warmup: readSeconds,
          seconds: readSeconds,
          mire: (_round, seconds) => perOp(seconds, op.mire),
          raw: (_round, seconds) => perOp(seconds, op.raw),
          note: `statements: mire ${statements}, raw 1`
        })
      )
    }
    return results
  })

/** Catch-up runs that stopped at the time cap, per workload. */
const capped = new Map<string, number>()

/** The events/s of a catch-up that handled `events` in `millis`, counting the runs that stopped at the time cap. */
const catchUpRate = (key: string, events: number, millis: number) =>
  Effect.sync(() => {
    if (events < catchupEvents) capped.set(key, (capped.get(key) ?? 0) + 1)
    return events / (millis / 1000)
  })

const catchUps = (db: pg.Pool, runId: string) =>
  Effect.gen(function* () {
    const results: Array<Result> = []
    const keys = ["sub", "sub-sql", "alo", "tx", "tx-sql"].filter(selected)
    if (keys.length === 0) return results
    const sql = yield* SqlClient.SqlClient
    yield* truncate(db)
    yield* log(`  seeding ${fmt(catchupEvents)} events (streams of 100, 10 streams per transaction) in both logs`)
    yield* seedLog(db, "c", catchupEvents, 100)
    yield* vacuum(db)
    const options = { workerId: `bench-${runId}`, batchSize: catchupBatch } as const
    const cap = catchupSeconds * 1000

    // The raw sides of `sub` and `tx`, which their `-sql` lines share (rates counted under `key`).
    const rawCatchUp = (key: string) =>
      once(raw(() => Raw.catchUp(db, catchupEvents, catchupBatch, now() + cap))).pipe(
        Effect.flatMap((r) => catchUpRate(key, r.value, r.millis))
      )
    const rawTransactional = (key: string, subscriptionId: string) =>
      once(raw(() => Raw.catchUpTransactional(db, subscriptionId, catchupEvents, catchupBatch, now() + cap))).pipe(
        Effect.flatMap((r) => catchUpRate(key, r.value, r.millis))
      )

    // The stack's ceiling (diagnostic): the raw side's catch-ups, their statements sent through
    // `@effect/sql` (each page, UPDATE and checkpoint a statement of its template).
    const rawPage = (cursor: readonly [string, string]) =>
      sql<Raw.RawRow>`SELECT * FROM raw_events
        WHERE (transaction_id, global_position) > (${cursor[0]}::xid8, ${cursor[1]}::int8)
          AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
        ORDER BY transaction_id, global_position
        LIMIT ${catchupBatch}`
    const stackCatchUp = (handle: (rows: ReadonlyArray<Raw.RawRow>, cursor: readonly [string, string]) => Effect.Effect<unknown, SqlError>) =>
      Effect.gen(function* () {
        const started = now()
        let cursor: readonly [string, string] = ["0", "0"]
        let seen = 0
        while (seen < catchupEvents && now() - started < cap) {
          const rows = yield* rawPage(cursor)
          const last = rows[rows.length - 1]
          if (last === undefined) break
          cursor = [last.transaction_id, last.global_position]
          yield* handle(rows, cursor)
          seen += rows.length
        }
        return { seen, millis: now() - started }
      })

    if (selected("sub")) {
      results.push(
        yield* compare({
          key: "sub",
          label: `catch-up ${fmt(catchupEvents)}, Subscription, no handler, batch ${catchupBatch}`,
          kind: "rate",
          target: 0.7,
          mire: (round) =>
            Effect.scoped(
              Effect.gen(function* () {
                const sub = yield* Subscription.make({
                  subscriptionId: `sub-${runId}-${round}`,
                  categories: [Cart.category],
                  batchSize: catchupBatch
                })
                const started = now()
                let seen = 0
                while (seen < catchupEvents && now() - started < cap) {
                  const batch = yield* sub.poll
                  if (batch.length === 0) return yield* new BenchFailure({ message: `subscription stopped at ${seen}` })
                  seen += batch.length
                }
                return yield* catchUpRate("sub", seen, now() - started)
              })
            ),
          raw: () => rawCatchUp("sub")
        })
      )
    }

    if (selected("sub-sql")) {
      results.push(
        yield* compare({
          key: "sub-sql",
          label: `catch-up ${fmt(catchupEvents)}: the raw pages through @effect/sql (diagnostic)`,
          kind: "rate",
          target: undefined,
          mire: () => Effect.flatMap(stackCatchUp(() => Effect.void), (r) => catchUpRate("sub-sql", r.seen, r.millis)),
          raw: () => rawCatchUp("sub-sql")
        })
      )
    }

    /**
     * Starts a runner with one projection and waits until it handled every
     * event and checkpointed. When the cap passes first, it waits for the
     * next commit (`committed` grows), as the raw side finishes its page,
     * and the rate is over what was committed by then.
     */
    const runProjection = <R, E2, R2>(
      key: string,
      make: (subscriptionId: string, handled: () => Effect.Effect<void>) => Projection.Projection<R>,
      subscriptionId: string,
      committed: (handled: number) => Effect.Effect<number, E2, R2>
    ) =>
      Effect.gen(function* () {
        const done = yield* Deferred.make<void>()
        let handled = 0
        const projection = make(subscriptionId, () =>
          Effect.suspend(() => (++handled === catchupEvents ? Deferred.succeed(done, undefined) : Effect.void))
        )
        const started = now()
        const { events, ended } = yield* Effect.scoped(
          Effect.gen(function* () {
            const runner = yield* ProjectionRunner.run([projection], options)
            const complete = yield* Deferred.await(done).pipe(
              Effect.zipRight(runner.whenCaughtUp(subscriptionId)),
              Effect.as(true),
              Effect.timeoutTo({ duration: cap, onTimeout: () => false, onSuccess: (ok) => ok })
            )
            if (complete) return { events: catchupEvents, ended: now() }
            const atCap = yield* committed(handled)
            const waitUntil = now() + cap
            let events = atCap
            while (events === atCap && now() < waitUntil) {
              yield* Effect.sleep("20 millis")
              events = yield* committed(handled)
            }
            return { events, ended: now() }
          })
        )
        return yield* catchUpRate(key, events, ended - started)
      })

    if (selected("alo")) {
      results.push(
        yield* compare({
          key: "alo",
          label: `catch-up ${fmt(catchupEvents)}, ProjectionRunner at-least-once, no-op handler`,
          kind: "rate",
          target: 0.6,
          mire: (round) =>
            runProjection(
              "alo",
              (subscriptionId, handled) => Projection.atLeastOnce({ subscriptionId, aggregate: Cart, handle: () => handled() }),
              `alo-${runId}-${round}`,
              (handled) => Effect.sync(() => handled)
            ),
          raw: (round) =>
            once(raw(() => Raw.catchUpAtLeastOnce(db, `raw-alo-${runId}-${round}`, catchupEvents, catchupBatch, now() + cap))).pipe(
              Effect.flatMap((r) => catchUpRate("alo", r.value, r.millis))
            )
        })
      )
    }

    if (selected("tx")) {
      const counted = (id: string) =>
        Effect.map(sql<{ readonly n: string }>`SELECT n FROM bench_totals WHERE id = ${id}`, (rows) => Number(rows[0]?.n ?? 0))
      results.push(
        yield* compare({
          key: "tx",
          label: `catch-up ${fmt(catchupEvents)}, ProjectionRunner transactional, 1 UPDATE/event`,
          kind: "rate",
          target: 0.85,
          mire: (round) => {
            const id = `tx-${runId}-${round}`
            return sql`INSERT INTO bench_totals (id) VALUES (${id})`.pipe(
              Effect.zipRight(
                runProjection(
                  "tx",
                  (subscriptionId, handled) =>
                    Projection.transactional({
                      subscriptionId,
                      aggregate: Cart,
                      handle: () => Effect.zipRight(sql`UPDATE bench_totals SET n = n + 1 WHERE id = ${subscriptionId}`, handled())
                    }),
                  id,
                  () => counted(id)
                )
              ),
              // Exactly once: the read model counted every committed event once.
              Effect.tap(() =>
                Effect.flatMap(counted(id), (n) =>
                  check(n <= catchupEvents, `transactional projection counted ${n} of ${catchupEvents} events`)
                )
              )
            )
          },
          raw: (round) => rawTransactional("tx", `raw-tx-${runId}-${round}`)
        })
      )
    }
    if (selected("tx-sql")) {
      const checkpointUpdate = (id: string, cursor: readonly [string, string]) =>
        sql`UPDATE raw_checkpoints SET transaction_id = ${cursor[0]}::xid8, global_position = ${cursor[1]}
            WHERE subscription_id = ${id} AND fence_token = ${1}`
      results.push(
        yield* compare({
          key: "tx-sql",
          label: `catch-up ${fmt(catchupEvents)}, 1 UPDATE/event: the raw transactions through @effect/sql (diagnostic)`,
          kind: "rate",
          target: undefined,
          mire: (round) => {
            const id = `tx-sql-${runId}-${round}`
            return Effect.gen(function* () {
              yield* sql`INSERT INTO raw_checkpoints (subscription_id) VALUES (${id})`
              yield* sql`INSERT INTO bench_totals (id) VALUES (${id})`
              const r = yield* stackCatchUp((rows, cursor) =>
                sql.withTransaction(
                  Effect.gen(function* () {
                    for (let i = 0; i < rows.length; i++) yield* sql`UPDATE bench_totals SET n = n + 1 WHERE id = ${id}`
                    yield* checkpointUpdate(id, cursor)
                  })
                )
              )
              return yield* catchUpRate("tx-sql", r.seen, r.millis)
            })
          },
          raw: (round) => rawTransactional("tx-sql", `raw-txs-${runId}-${round}`)
        })
      )
    }
    return results
  })

// ---------------------------------------------------------------------------
// Wake-up latency, cross-process

interface Child {
  readonly process: ChildProcess
  readonly delivered: Map<string, number>
  ready: boolean
  exited: boolean
}

const spawnSubscriber = (url: string, category: string, subscriptionId: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = fork(fileURLToPath(new URL("./wakeup-subscriber.ts", import.meta.url)), [], {
        execArgv: process.execArgv.filter((arg) => !arg.startsWith("--cpu-prof")),
        env: { ...process.env, BENCH_DB_URL: url, BENCH_CATEGORY: category, BENCH_SUBSCRIPTION: subscriptionId },
        stdio: ["ignore", "inherit", "inherit", "ipc"]
      })
      const state: Child = { process: child, delivered: new Map(), ready: false, exited: false }
      child.on("message", (message: { readonly type?: string; readonly events?: ReadonlyArray<readonly [string, number]> }) => {
        if (message.type === "ready") state.ready = true
        for (const [streamId, at] of message.events ?? []) state.delivered.set(streamId, at)
      })
      child.on("exit", () => {
        state.exited = true
      })
      return state
    }),
    // Waits (up to 10 s) for the child to close its connections: the run's database is dropped
    // next, and a connection dropped under a child still shutting down crashes it noisily.
    (state) =>
      Effect.suspend(() => {
        if (state.exited) return Effect.void
        state.process.disconnect()
        return waitFor(() => state.exited, 10_000, "the subscriber process to exit").pipe(Effect.ignore)
      })
  )

/** Polls `predicate` every 5 ms until it holds or `millis` pass. */
const waitFor = (predicate: () => boolean, millis: number, what: string) =>
  Effect.gen(function* () {
    const deadline = now() + millis
    while (!predicate()) {
      if (now() > deadline) return yield* new BenchFailure({ message: `timed out waiting for ${what}` })
      yield* Effect.sleep("5 millis")
    }
  })

const wakeup = (url: string, runId: string) =>
  Effect.scoped(
    Effect.gen(function* () {
      const category = `wake${runId}`
      const child = yield* spawnSubscriber(url, category, `wake-${runId}`)
      yield* waitFor(() => child.ready || child.exited, 60_000, "the subscriber process to start")
      yield* check(!child.exited, "the subscriber process exited")
      // A probe proves the pipeline (and lets the subscriber's LISTEN settle) before the load starts.
      const probe = `${category}-probe`
      yield* EventStore.append(probe, category, ExpectedVersion.NoStream, [newEvent])
      yield* waitFor(() => child.delivered.has(probe), 30_000, "the probe event")
      const p50: Array<number> = []
      const p99: Array<number> = []
      const rates: Array<number> = []
      let missing = 0
      // Round 0 warms the writers' connections up and is not counted.
      for (let round = 0; round <= rounds; round++) {
        const sent = new Map<string, number>()
        let n = 0
        const rate = yield* rateMire(round === 0 ? Math.min(1, wakeSeconds) : wakeSeconds, writers, (w) => {
          const streamId = `${category}-r${round}w${w}n${n++}`
          return Effect.suspend(() => {
            sent.set(streamId, performance.timeOrigin + now())
            return EventStore.append(streamId, category, ExpectedVersion.NoStream, [newEvent])
          }).pipe(Effect.as(1))
        })
        yield* waitFor(() => [...sent.keys()].every((id) => child.delivered.has(id)), 15_000, "every event to be delivered").pipe(
          Effect.catchAll(() => Effect.void)
        )
        if (round === 0) continue
        const latencies: Array<number> = []
        for (const [id, at] of sent) {
          const delivered = child.delivered.get(id)
          if (delivered === undefined) missing++
          else latencies.push(delivered - at)
        }
        p50.push(percentile(latencies, 50))
        p99.push(percentile(latencies, 99))
        rates.push(rate)
        yield* log(
          `  wake       round ${round} ${fmt(latencies.length)} events at ${fmt(rate)}/s: p50 ${fmt(percentile(latencies, 50), 1)} ms, p99 ${fmt(percentile(latencies, 99), 1)} ms`
        )
      }
      return {
        p50,
        p99,
        note: `${writers} writers at ${fmt(median(rates))} events/s (median); latency from the append call to delivery in the other process${missing > 0 ? `; ${missing} NOT DELIVERED` : ""}`
      } satisfies Latency
    })
  )

// ---------------------------------------------------------------------------
// Report

const spread = (xs: ReadonlyArray<number>, digits: number) =>
  `${fmt(Math.min(...xs), digits)}–${fmt(Math.max(...xs), digits)}`

const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>) => {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) => `| ${cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join(" | ")} |`
  const rule = `|${widths.map((w, c) => (c === 0 ? "-".repeat(w + 2) : `${"-".repeat(w + 1)}:`)).join("|")}|`
  return [line(header), rule, ...rows.map(line)].join("\n")
}

const report = (results: ReadonlyArray<Result>, latency: Latency | undefined) => {
  const rows = results.map((r) => {
    const ratios = r.mire.map((m, i) => m / r.raw[i]!)
    const ratio = median(ratios)
    const rate = r.kind === "rate"
    const value = (xs: ReadonlyArray<number>) => (rate ? `${fmt(median(xs))} ev/s` : `${fmt(median(xs), 2)} ms`)
    const target = r.target
    const pass = target === undefined || (rate ? ratio >= target : ratio <= target)
    const by = target === undefined ? 1 : rate ? target / ratio : ratio / target
    return [
      r.label,
      value(r.mire),
      value(r.raw),
      `${fmt(ratio, 2)}${rate ? "" : "x"} (${spread(ratios, 2)})`,
      target === undefined ? "-" : `${rate ? ">=" : "<="} ${target}${rate ? "" : "x"}`,
      target === undefined ? "diagnostic" : pass ? "PASS" : Number.isFinite(by) ? `MISS (x${fmt(by, 1)} off)` : "MISS",
      [
        r.note,
        `GC pauses: mire ${fmt(100 * median(r.gc.mire))}%, raw ${fmt(100 * median(r.gc.raw))}% of run time`,
        capped.has(r.key)
          ? `${capped.get(r.key)} of ${2 * rounds} runs hit the ${catchupSeconds} s cap (rate over the events committed by then)`
          : ""
      ]
        .filter((n) => n !== "")
        .join("; ")
    ]
  })
  if (latency !== undefined) {
    const pass = median(latency.p50) <= 20 && median(latency.p99) <= 100
    rows.push([
      "wake-up latency, cross-process",
      `p50 ${fmt(median(latency.p50), 1)} ms (${spread(latency.p50, 1)}), p99 ${fmt(median(latency.p99), 1)} ms (${spread(latency.p99, 1)})`,
      "-",
      "-",
      "p50 <= 20 ms, p99 <= 100 ms",
      pass ? "PASS" : "MISS",
      latency.note
    ])
  }
  return table(["workload", "mire (median)", "raw (median)", "mire ÷ raw (median, spread)", "target", "result", "note"], rows)
}

// ---------------------------------------------------------------------------
// The program

const header = (source: string, db: pg.Pool) =>
  Effect.gen(function* () {
    const settings = yield* raw(() =>
      db.query<Record<string, string>>(
        `SELECT current_setting('server_version') AS version, current_setting('fsync') AS fsync,
           current_setting('synchronous_commit') AS synchronous_commit, current_setting('shared_buffers') AS shared_buffers`
      )
    )
    const s = settings.rows[0] ?? {}
    yield* log("mire bench (issue 12): mire vs raw PostgreSQL")
    yield* log(`server:   ${source}`)
    yield* log(
      `settings: PostgreSQL ${s.version}, fsync=${s.fsync}, synchronous_commit=${s.synchronous_commit}, shared_buffers=${s.shared_buffers}`
    )
    yield* log(`client:   Node ${process.version}, ${availableParallelism()} CPUs, 1-min load average at start ${loadavg()[0]!.toFixed(2)}`)
    // V8's young generation and its pretenuring decide much of the catch-up and read rows (bench/README.md):
    // say how they were set.
    const v8Flags = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(" ")]
    const flags = v8Flags.filter((f) => f.startsWith("--max-semi") || f.startsWith("--min-semi"))
    const pretenuring = v8Flags.includes("--no-allocation-site-pretenuring") ? "off (--no-allocation-site-pretenuring)" : "on (V8's default)"
    yield* log(
      `V8:       young generation ${flags.length === 0 ? "as V8 sizes it (no --max-semi-space-size)" : flags.join(" ")}; ` +
        `allocation-site pretenuring ${pretenuring}`
    )
    yield* log(
      `sizes:    rounds ${rounds}, append runs ${appendSeconds} s, read runs >= ${readSeconds} s, ${writers} writers, batch ${batchEvents}, ` +
        `appendMany ${manyStreams}x${manyEvents}, read ${readEvents}, catch-up ${catchupEvents} (batch ${catchupBatch}), wake-up ${wakeSeconds} s/round\n`
    )
  })

const main = Effect.scoped(
  Effect.gen(function* () {
    const started = now()
    const { url, source } = yield* server
    const fresh = yield* database(url)
    const db = yield* Effect.acquireRelease(
      Effect.sync(() => Raw.pool(fresh.url, writers)),
      (p) => Effect.promise(() => p.end())
    )
    // Created on a client of its own, like every truncation (see `truncate`).
    yield* admin(fresh.url, Raw.schema)
    const runId = Math.random().toString(36).slice(2, 7)
    const program = Effect.gen(function* () {
      yield* header(`${source}, database ${fresh.name}`, db)
      const results: Array<Result> = []
      results.push(...(yield* appends(db, runId)))
      results.push(...(yield* reads(db)))
      results.push(...(yield* catchUps(db, runId)))
      const latency = selected("wake") ? yield* Effect.zipRight(truncate(db), wakeup(fresh.url, runId)) : undefined
      yield* log(`\n1-min load average at end: ${loadavg()[0]!.toFixed(2)}; total ${fmt((now() - started) / 1000, 0)} s\n`)
      yield* log(report(results, latency))
    })
    yield* program.pipe(Effect.provide(mireLayer(fresh.url)))
  })
)

Effect.runPromise(main).then(
  () => undefined,
  (error: unknown) => {
    console.error(error)
    process.exitCode = 1
  }
)
