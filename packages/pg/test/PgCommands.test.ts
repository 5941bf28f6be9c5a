import { assert, layer } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { Aggregate, CommandHandler } from "@mire/core"
import { commandHandlerSuite } from "@mire/core/conformance"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as PgCommandLog from "../src/PgCommandLog.js"
import * as PgEventStore from "../src/PgEventStore.js"
import * as PgMigrations from "../src/PgMigrations.js"
import * as PgSchema from "../src/PgSchema.js"
import * as PgStore from "../src/PgStore.js"
import { migratedLayer, TestDatabase } from "./utils.js"

const storeLayer = Layer.mergeAll(PgEventStore.layer, PgCommandLog.layer).pipe(Layer.provideMerge(migratedLayer()))

commandHandlerSuite("postgres", storeLayer)
commandHandlerSuite("postgres (PgStore.layer)", PgStore.layer.pipe(Layer.provideMerge(migratedLayer())))

const Added = Schema.TaggedStruct("Added", { n: Schema.Number })
const Counter = Aggregate.make({
  category: "counter",
  events: Added,
  initial: { total: 0 },
  apply: (state, event) => ({ total: state.total + event.n })
})
const add = CommandHandler.make({
  aggregate: Counter,
  decide: (_: { readonly total: number }, n: number) => Effect.succeed([Added.make({ n })])
})

/** The event store and command log over a pool of their own on this file's database (another process, in effect). */
const otherProcess = Layer.unwrapEffect(
  Effect.map(TestDatabase, ({ url }) =>
    Layer.mergeAll(PgEventStore.layer, PgCommandLog.layer).pipe(
      Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 4 }).pipe(Layer.orDie))
    )
  )
)

layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })("PgCommandLog", (it) => {
  it.effect("the command row holds the outcome, in the same transaction as the events", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const id = `row-${crypto.randomUUID()}`
      const commandId = crypto.randomUUID()
      const outcome = yield* add(id, 5, { commandId })
      const record = outcome._tag === "Decided" ? Option.getOrThrow(outcome.record) : assert.fail("not decided")
      const rows = yield* sql<{
        readonly stream_id: string
        readonly versions: string
        readonly event_ids: string
        readonly same_xid: boolean
      }>`SELECT c.stream_id, c.first_version || '-' || c.last_version AS versions, c.event_ids::text AS event_ids,
              c.transaction_id = e.transaction_id AS same_xid
         FROM es_commands c JOIN es_events e ON e.global_position = c.first_position
         WHERE c.command_id = ${commandId}`
      assert.deepStrictEqual(rows, [
        { stream_id: `counter-${id}`, versions: "1-1", event_ids: `{${record.eventIds[0]}}`, same_xid: true }
      ])
    }))

  it.effect("two processes (two pools) race one command id, 20 times: exactly one appends each time", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const id = `race-${crypto.randomUUID()}`
      const other = yield* Layer.build(otherProcess)
      for (let round = 0; round < 20; round++) {
        const commandId = `race-${round}-${crypto.randomUUID()}`
        const [here, there] = yield* Effect.all(
          [add(id, 1, { commandId }), add(id, 1, { commandId }).pipe(Effect.provide(other))],
          { concurrency: 2 }
        )
        assert.deepStrictEqual([here._tag, there._tag].sort(), ["Decided", "Repeated"], `round ${round}`)
      }
      const [count] = yield* sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM es_events WHERE stream_id = ${`counter-${id}`}`
      assert.strictEqual(count?.n, 20)
      const [commands] = yield* sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM es_commands WHERE stream_id = ${`counter-${id}`}`
      assert.strictEqual(commands?.n, 20)
    }).pipe(Effect.scoped))

  it.effect("in another schema, the command log is that schema's es_commands", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const tenant = Layer.mergeAll(PgEventStore.layer, PgCommandLog.layer).pipe(
        Layer.provideMerge(Layer.effectDiscard(PgMigrations.migrate().pipe(Effect.orDie))),
        Layer.provide(PgSchema.layer("cmd_tenant").pipe(Layer.orDie))
      )
      const commandId = crypto.randomUUID()
      const id = `t-${crypto.randomUUID()}`
      const [first, second] = yield* Effect.all([add(id, 2, { commandId }), add(id, 2, { commandId })]).pipe(
        Effect.provide(tenant)
      )
      assert.deepStrictEqual([first._tag, second._tag], ["Decided", "Repeated"])
      const count = (table: string) =>
        Effect.map(
          sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM ${sql.literal(table)} WHERE command_id = ${commandId}`,
          (rows) => rows[0]?.n
        )
      assert.strictEqual(yield* count(`"cmd_tenant".es_commands`), 1)
      assert.strictEqual(yield* count(`"public".es_commands`), 0)
    }))
})
