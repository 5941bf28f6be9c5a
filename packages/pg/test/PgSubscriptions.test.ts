import { assert, describe, layer } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { holdBackRestartSuite, statusSuite, subscriptionSuite } from "@mire/core/conformance"
import * as PgSubscriptionStore from "../src/PgSubscriptionStore.js"
import { pgRaw } from "./raw.js"
import { storeLayer } from "./utils.js"

const layerPg = PgSubscriptionStore.layer.pipe(Layer.provideMerge(pgRaw), Layer.provideMerge(storeLayer({ maxConnections: 60 })))

subscriptionSuite("postgres", layerPg)
holdBackRestartSuite("postgres", layerPg)
statusSuite("postgres", layerPg)

interface PlanNode {
  readonly "Node Type": string
  readonly "Index Name"?: string
  readonly Plans?: ReadonlyArray<PlanNode>
}

const nodes = (plan: PlanNode): ReadonlyArray<PlanNode> => [plan, ...(plan.Plans ?? []).flatMap(nodes)]

describe("subscription poll plan", () => {
  layer(storeLayer(), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.effect("the poll uses the cursor indexes on 20k+ rows: no sequential scan, no sort", () =>
      Effect.gen(function* () {
        const sql = yield* PgClient.PgClient
        for (let batch = 0; batch < 24; batch++) {
          yield* EventStore.appendMany(
            ["alpha", "beta", "gamma"].map((category) => ({
              streamId: `${category}-${batch}`,
              category,
              expected: ExpectedVersion.NoStream,
              events: Array.from({ length: 300 }, (_, i) => ({ eventType: "plan.e", schemaVersion: 1, data: { i } }))
            }))
          )
        }
        yield* EventStore.append("rare-1", "rare", ExpectedVersion.NoStream, [{ eventType: "plan.e", schemaVersion: 1, data: {} }])
        yield* sql`ANALYZE es_events`
        const [middle] = yield* sql<{ txid: string; pos: string }>`
          SELECT transaction_id::text AS txid, global_position::text AS pos FROM es_events
          ORDER BY global_position OFFSET 10000 LIMIT 1`
        const after = { transactionId: BigInt(middle!.txid), position: BigInt(middle!.pos) }
        for (const categories of [undefined, ["beta"], ["rare"], ["alpha", "gamma"], ["rare", "beta"]]) {
          const [text, params] = PgSubscriptionStore.pollStatement(sql, { categories }, after, 100).compile()
          const rows = yield* sql.unsafe<{ "QUERY PLAN": ReadonlyArray<{ Plan: PlanNode }> }>(
            `EXPLAIN (FORMAT JSON) ${text}`,
            params
          )
          const plan = nodes(rows[0]!["QUERY PLAN"][0]!.Plan)
          const types = plan.map((n) => `${n["Node Type"]}${n["Index Name"] === undefined ? "" : ` on ${n["Index Name"]}`}`)
          assert.isFalse(types.some((t) => t.startsWith("Seq Scan")), `${categories ?? "all"}: ${types.join(" > ")}`)
          assert.isFalse(types.some((t) => t.startsWith("Sort")), `${categories ?? "all"}: ${types.join(" > ")}`)
          // Either cursor index serves a common category; a rare one must use the per-category index.
          const expected =
            categories === undefined
              ? ["es_events_cursor_idx"]
              : categories[0] === "rare" && categories.length === 1
                ? ["es_events_category_cursor_idx"]
                : ["es_events_cursor_idx", "es_events_category_cursor_idx"]
          assert.isTrue(
            plan.some((n) => expected.includes(n["Index Name"] ?? "")),
            `${categories ?? "all"}: ${types.join(" > ")}`
          )
          console.log(`[poll plan] ${categories ?? "all"}: ${types.join(" > ")}`)
        }
      }))
  })
})
