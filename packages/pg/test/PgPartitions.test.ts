import { assert, describe, it, layer } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { partitionSuite, waitUntil } from "@mire/core/conformance"
import * as Cursor from "@mire/core/Cursor"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Projection from "@mire/core/Projection"
import * as ProjectionRunner from "@mire/core/ProjectionRunner"
import * as Subscription from "@mire/core/Subscription"
import * as SubscriptionStore from "@mire/core/SubscriptionStore"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as PgStore from "../src/PgStore.js"
import * as ShardIndex from "../src/internal/shardIndex.js"
import * as PgSubscriptionStore from "../src/PgSubscriptionStore.js"
import { pgReadModel } from "./raw.js"
import { migratedLayer, TestDatabase } from "./utils.js"

const storeLayer = pgReadModel.pipe(Layer.provideMerge(PgStore.layer), Layer.provideMerge(migratedLayer({ maxConnections: 40 })))

partitionSuite("postgres", storeLayer)

interface PlanNode {
  readonly "Node Type": string
  readonly "Index Name"?: string
  readonly "Actual Rows"?: number
  readonly "Rows Removed by Filter"?: number
  readonly "Shared Hit Blocks"?: number
  readonly "Shared Read Blocks"?: number
  readonly Plans?: ReadonlyArray<PlanNode>
}

const nodes = (plan: PlanNode): ReadonlyArray<PlanNode> => [plan, ...(plan.Plans ?? []).flatMap(nodes)]

const fast = { pollInterval: "50 millis", leaseTtl: "1 second", leaseRecheckInterval: "200 millis", batchSize: 20 } as const

describe("shard index builds", () => {
  it("under the claim: a valid index is ready, a missing one is built, an invalid leftover dropped first, a running build awaited", () => {
    assert.strictEqual(ShardIndex.decide("valid"), "ready")
    assert.strictEqual(ShardIndex.decide("absent"), "build")
    assert.strictEqual(ShardIndex.decide("invalid"), "dropAndBuild")
    assert.strictEqual(ShardIndex.decide("building"), "wait")
  })
})

describe("partitioned projections on Postgres", () => {
  layer(storeLayer, { timeout: "240 seconds", excludeTestServices: true })((it) => {
    it.effect("a shard's poll is one range of its own index: it reads its events, not the log", () =>
      Effect.gen(function* () {
        const sql = yield* PgClient.PgClient
        // 40k events: 2000 streams of 20, in two categories, 3 events per transaction (as a real log: many xids).
        yield* sql.unsafe(`
          DO $$
          BEGIN
            FOR t IN 0..13333 LOOP
              INSERT INTO es_events (event_id, stream_id, stream_version, category, event_type, data)
              SELECT gen_random_uuid(), c || '-' || (n / 2) % 1000, n / 2000 + 1, c, 'plan.e', '{}'::jsonb
              FROM generate_series(t * 3, least(t * 3 + 2, 39999)) n,
                   LATERAL (SELECT CASE WHEN n % 2 = 0 THEN 'plana' ELSE 'planb' END AS c) cc;
              COMMIT;
            END LOOP;
          END $$`)
        // The first poll of a shard of each kind builds its count's index.
        for (const categories of [["plana"], undefined]) {
          yield* Effect.scoped(
            Effect.flatMap(
              Subscription.make({ subscriptionId: `plan-${categories ?? "all"}`, categories, shard: { index: 0, count: 4 } }),
              (sub) => sub.poll
            )
          )
        }
        yield* sql`ANALYZE es_events`
        const indexes = yield* sql<{ indexname: string; valid: boolean }>`
          SELECT c.relname AS indexname, i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
          WHERE c.relname LIKE 'es_events_shard_%' ORDER BY 1`
        assert.deepStrictEqual(indexes, [
          { indexname: "es_events_shard_4_idx", valid: true },
          { indexname: "es_events_shard_c4_idx", valid: true }
        ])
        const pages = (yield* sql<{ pages: number }>`SELECT relpages::float8 AS pages FROM pg_class WHERE relname = 'es_events'`)[0]!.pages
        for (const [categories, index] of [
          [["plana"], "es_events_shard_c4_idx"],
          [["plana", "planb"], "es_events_shard_c4_idx"],
          [undefined, "es_events_shard_4_idx"]
        ] as const) {
          for (const shard of [0, 3]) {
            const filter = { categories, shard: { index: shard, count: 4 } }
            const [text, params] = PgSubscriptionStore.pollStatement(sql, filter, Cursor.start, 500).compile()
            const rows = yield* sql.unsafe<{ "QUERY PLAN": ReadonlyArray<{ Plan: PlanNode }> }>(
              `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${text}`,
              params
            )
            const top = rows[0]!["QUERY PLAN"][0]!.Plan
            const plan = nodes(top)
            const what = `${categories ?? "all"} shard ${shard}: ${plan.map((n) => `${n["Node Type"]}${n["Index Name"] === undefined ? "" : ` on ${n["Index Name"]}`}`).join(" > ")}`
            assert.isFalse(plan.some((n) => n["Node Type"] === "Seq Scan" || n["Node Type"] === "Sort"), what)
            const scans = plan.filter((n) => n["Index Name"] !== undefined)
            assert.isAbove(scans.length, 0, what)
            for (const scan of scans) {
              // The shard's own index (a range of its rows), or the cursor index filtered by the shard when the
              // planner prices that cheaper: the rows it reads and throws away are the other shards' events of the
              // same stretch of the log (at most about K times the page), on the same heap pages.
              assert.include([index, categories === undefined ? "es_events_cursor_idx" : "es_events_category_cursor_idx"], scan["Index Name"], what)
              const read = (scan["Actual Rows"] ?? 0) + (scan["Rows Removed by Filter"] ?? 0)
              assert.isAtMost(read, 2 * 4 * 500, `${what}: ${read} rows read`)
              if (scan["Index Name"] === index) assert.strictEqual(scan["Rows Removed by Filter"] ?? 0, 0, what)
            }
            console.log(`[partitions] ${what}`)
            const blocks = (top["Shared Hit Blocks"] ?? 0) + (top["Shared Read Blocks"] ?? 0)
            assert.isBelow(blocks, pages / 2, `${what}: ${blocks} of ${pages} blocks`)
          }
        }
        // A generic plan (a prepared statement after its first executions) matches the index too: the count is a literal.
        const [text] = PgSubscriptionStore.pollStatement(sql, { categories: ["plana"], shard: { index: 1, count: 4 } }, Cursor.start, 500).compile()
        assert.match(text, /mire_shard"?\(stream_id, 4\) = \$/)
      }), 180_000)

    it.scoped("shard indexes built at once by two pools, of two counts and kinds: one build at a time, all valid", () =>
      Effect.gen(function* () {
        const sql = yield* PgClient.PgClient
        const { url } = yield* TestDatabase
        yield* sql`
          INSERT INTO es_events (event_id, stream_id, stream_version, category, event_type, data)
          SELECT gen_random_uuid(), 'idx-' || s, v, 'idx', 'idx.e', '{}'::jsonb
          FROM generate_series(1, 10) v, generate_series(1, 20000) s ORDER BY v, s`
        // A second pool, as another process would have: its own store, its own builds.
        const other = yield* Layer.build(
          PgSubscriptionStore.layer.pipe(Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 8 })))
        )
        const stores = [yield* SubscriptionStore.SubscriptionStore, Context.get(other, SubscriptionStore.SubscriptionStore)]
        // An invalid leftover of an interrupted build, as the deadlock left it before: dropped and built again.
        yield* sql.unsafe(`CREATE INDEX es_events_shard_c9_idx ON es_events (category, stream_id) WHERE false`)
        yield* sql`UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'es_events_shard_c9_idx'::regclass`
        const polls = [
          [0, ["idx"], 8],
          [0, undefined, 6],
          [1, ["idx"], 8],
          [1, undefined, 7],
          [0, ["idx"], 9],
          [1, undefined, 6]
        ] as const
        yield* Effect.forEach(
          polls,
          ([store, categories, count]) => stores[store]!.poll({ categories, shard: { index: 1, count } }, Cursor.start, 10),
          { concurrency: "unbounded", discard: true }
        )
        const indexes = yield* sql<{ indexname: string; valid: boolean; definition: string }>`
          SELECT c.relname AS indexname, i.indisvalid AS valid, pg_get_indexdef(i.indexrelid) AS definition
          FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
          WHERE c.relname IN ('es_events_shard_c8_idx', 'es_events_shard_6_idx', 'es_events_shard_7_idx', 'es_events_shard_c9_idx')
          ORDER BY 1`
        assert.deepStrictEqual(
          indexes.map((i) => [i.indexname, i.valid]),
          [
            ["es_events_shard_6_idx", true],
            ["es_events_shard_7_idx", true],
            ["es_events_shard_c8_idx", true],
            ["es_events_shard_c9_idx", true]
          ]
        )
        assert.match(indexes.find((i) => i.indexname === "es_events_shard_c9_idx")!.definition, /mire_shard\(stream_id, 9\)/)
        assert.deepStrictEqual(yield* sql`SELECT * FROM es_index_builds`, [], "every claim released")
      }))

    it.effect("mire_shard computes the same shard whatever the search_path (its operators are pg_catalog's)", () =>
      Effect.gen(function* () {
        const sql = yield* PgClient.PgClient
        yield* sql.unsafe(`CREATE SCHEMA shard_trap`)
        yield* sql.unsafe(`CREATE FUNCTION shard_trap.zero(bigint, integer) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint'`)
        yield* sql.unsafe(`CREATE FUNCTION shard_trap.zero8(bigint, bigint) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint'`)
        yield* sql.unsafe(`CREATE OPERATOR shard_trap.% (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = shard_trap.zero)`)
        yield* sql.unsafe(`CREATE OPERATOR shard_trap.% (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = shard_trap.zero8)`)
        yield* sql.unsafe(`CREATE OPERATOR shard_trap.& (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = shard_trap.zero8)`)
        const shards = (rows: ReadonlyArray<{ readonly shards: string }>) => rows[0]!.shards
        const plain = shards(
          yield* sql<{ shards: string }>`SELECT string_agg(mire_shard('account-' || i, 4)::text, ',' ORDER BY i) AS shards FROM generate_series(1, 40) i`
        )
        const trapped = shards(
          yield* sql.withTransaction(
            Effect.zipRight(
              sql`SET LOCAL search_path = shard_trap, public`,
              sql<{ shards: string }>`SELECT string_agg(mire_shard('account-' || i, 4)::text, ',' ORDER BY i) AS shards FROM generate_series(1, 40) i`
            )
          )
        )
        assert.notMatch(plain, /^(0,)*0$/, "the streams spread over several shards")
        assert.strictEqual(trapped, plain)
      }))

    it.effect("two runners, a transactional projection of 4 shards under writes: each event applied once, every stream in order", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE part_model (stream_id text NOT NULL, version int NOT NULL, worker text NOT NULL, seq bigserial)`
        const category = "parttwo"
        const subscriptionId = "part-two"
        const projection = (worker: string) =>
          Projection.transactional({
            subscriptionId,
            categories: [category],
            partitions: 4,
            handle: ({ recorded }) =>
              Effect.asVoid(
                sql`INSERT INTO part_model (stream_id, version, worker) VALUES (${recorded.streamId}, ${recorded.streamVersion}, ${worker})`
              )
          })
        const start = (worker: string) =>
          Effect.gen(function* () {
            const scope = yield* Scope.make()
            const runner = yield* ProjectionRunner.run([projection(worker)], { ...fast, workerId: worker }).pipe(Scope.extend(scope))
            return { runner, stop: Scope.close(scope, Exit.void) }
          })
        const streams = 24
        const rounds = 15
        const writer = yield* Effect.fork(
          Effect.forEach(
            Array.from({ length: rounds }, (_, r) => r),
            (r) =>
              Effect.forEach(
                Array.from({ length: streams }, (_, s) => s),
                (s) =>
                  EventStore.append(`${category}-${s}`, category, r === 0 ? ExpectedVersion.NoStream : ExpectedVersion.Exact(r), [
                    { eventType: "part.e", schemaVersion: 1, data: { r } }
                  ]),
                { concurrency: 4, discard: true }
              ).pipe(Effect.zipRight(Effect.sleep("20 millis"))),
            { discard: true }
          )
        )
        const a = yield* start("a")
        const b = yield* start("b")
        // Mid-stream, once it has applied events, one runner stops (releasing its shards): the others take them over.
        yield* waitUntil(
          Effect.map(
            sql<{ n: number }>`SELECT count(*)::float8 AS n FROM part_model WHERE worker = 'a'`.pipe(Effect.orDie),
            (rows) => rows[0]!.n > 0
          ),
          "runner a applied events",
          60_000
        )
        yield* a.stop
        yield* Effect.sleep("300 millis")
        const c = yield* start("c")
        yield* Fiber.join(writer)
        yield* b.runner.whenCaughtUp(subscriptionId, "120 seconds")
        yield* c.runner.whenCaughtUp(subscriptionId, "120 seconds")
        const rows = yield* sql<{ stream_id: string; versions: ReadonlyArray<number>; workers: ReadonlyArray<string> }>`
          SELECT stream_id, array_agg(version ORDER BY seq) AS versions, array_agg(DISTINCT worker) AS workers
          FROM part_model GROUP BY stream_id ORDER BY stream_id`
        assert.strictEqual(rows.length, streams)
        const expected = Array.from({ length: rounds }, (_, i) => i + 1)
        for (const row of rows) assert.deepStrictEqual(row.versions, expected, `${row.stream_id}: each version once, in order`)
        console.log(`[partitions] streams applied by: ${[...new Set(rows.map((row) => row.workers.join("+")))].join(", ")}`)
        const status = [...(yield* b.runner.status), ...(yield* c.runner.status)]
        assert.isTrue(status.every((s) => s.lag.events === 0))
        yield* b.stop
        yield* c.stop
      }))
  })
})
