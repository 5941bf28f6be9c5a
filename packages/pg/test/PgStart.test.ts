/**
 * Where a subscription starts and resets, on PostgreSQL: the conformance
 * suite, and the time lookup's plan (the BRIN index of migration 0018, not a
 * scan of the whole log).
 */
import { assert, describe, layer } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import { startSuite } from "@mire/core/conformance"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as PgStore from "../src/PgStore.js"
import * as PgSubscriptionStore from "../src/PgSubscriptionStore.js"
import { migratedLayer } from "./utils.js"

startSuite("postgres", PgStore.layer.pipe(Layer.provideMerge(migratedLayer({ maxConnections: 20 }))))

interface PlanNode {
  readonly "Node Type": string
  readonly "Index Name"?: string
  readonly "Relation Name"?: string
  readonly "Shared Hit Blocks"?: number
  readonly "Shared Read Blocks"?: number
  readonly Plans?: ReadonlyArray<PlanNode>
}

const nodes = (plan: PlanNode): ReadonlyArray<PlanNode> => [plan, ...(plan.Plans ?? []).flatMap(nodes)]

describe("locating a time", () => {
  layer(migratedLayer(), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.effect("reads the block ranges from that time on (BRIN), not the whole log, on 100k events", () =>
      Effect.gen(function* () {
        const sql = yield* PgClient.PgClient
        // 100k events, one a second from a day in 2025, in 10 transactions (written as the log is: in
        // recorded_at order).
        for (let chunk = 0; chunk < 10; chunk++) {
          yield* sql`
            INSERT INTO es_events (event_id, stream_id, stream_version, category, event_type, data, recorded_at)
            SELECT gen_random_uuid(), 'brin-' || i, 1, 'brin', 'brin.e', '{"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}'::jsonb,
                   timestamptz '2025-06-01 00:00:00Z' + i * interval '1 second'
            FROM generate_series(${chunk * 10_000}::int, ${chunk * 10_000 + 9_999}::int) i`
        }
        // What autovacuum does for filled block ranges (autosummarize), done now.
        yield* sql`SELECT brin_summarize_new_values('es_events_recorded_at_brin')`
        yield* sql`ANALYZE es_events`
        const [table] = yield* sql<{ pages: number }>`SELECT relpages AS pages FROM pg_class WHERE relname = 'es_events'`
        const pages = table!.pages
        for (const offset of [99_000, 95_000]) {
          const time = new Date(Date.parse("2025-06-01T00:00:00Z") + offset * 1000)
          const [text, params] = PgSubscriptionStore.locateStatement(sql, { time }).compile()
          const rows = yield* sql.unsafe<{ "QUERY PLAN": ReadonlyArray<{ Plan: PlanNode }> }>(
            `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${text}`,
            params
          )
          const top = rows[0]!["QUERY PLAN"][0]!.Plan
          const plan = nodes(top)
          const types = plan.map((n) => `${n["Node Type"]}${n["Index Name"] === undefined ? "" : ` on ${n["Index Name"]}`}`)
          assert.isFalse(types.some((t) => t.startsWith("Seq Scan")), types.join(" > "))
          assert.isTrue(types.includes("Bitmap Index Scan on es_events_recorded_at_brin"), types.join(" > "))
          const blocks = (top["Shared Hit Blocks"] ?? 0) + (top["Shared Read Blocks"] ?? 0)
          assert.isBelow(blocks, pages / 5, `${blocks} of ${pages} blocks read for the last ${100_000 - offset} events`)
        }
      }))
  })
})
