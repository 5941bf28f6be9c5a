/**
 * Dead letters on PostgreSQL: the conformance suite (the same as in memory),
 * two replicas of a skipping transactional projection with a failover in the
 * middle (each event lands exactly once: in the read model or as one dead
 * letter), and the store in a schema of its own.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { deadLetterSuite, TxReadModel, waitUntil } from "@mire/core/conformance"
import * as DeadLetters from "@mire/core/DeadLetters"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Projection from "@mire/core/Projection"
import * as ProjectionRunner from "@mire/core/ProjectionRunner"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as PgMigrations from "../src/PgMigrations.js"
import * as PgSchema from "../src/PgSchema.js"
import * as PgStore from "../src/PgStore.js"
import { pgRaw, pgReadModel } from "./raw.js"
import { migratedLayer } from "./utils.js"

const storeLayer = Layer.mergeAll(pgReadModel, pgRaw).pipe(
  Layer.provideMerge(PgStore.layer),
  Layer.provideMerge(migratedLayer({ maxConnections: 20 }))
)

deadLetterSuite("postgres", storeLayer)

describe("dead letters: postgres only", () => {
  layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.effect("two replicas, a failover mid-way: every event once, in the read model or as one dead letter", () =>
      Effect.gen(function* () {
        const model = yield* TxReadModel
        const subscriptionId = "dl-replicas"
        const streams = 20
        // Version 2 of every fourth stream is poison: it and version 3 become dead letters.
        const poison = (streamId: string, version: number) => version === 2 && Number(streamId.split("-")[1]) % 4 === 0
        const projection = Projection.transactional({
          subscriptionId,
          categories: ["dlrep"],
          onFailure: "skip",
          handle: ({ recorded }) =>
            Effect.zipRight(
              model.insert(`${subscriptionId}:${recorded.streamId}@${recorded.streamVersion}`),
              poison(recorded.streamId, recorded.streamVersion) ? Effect.fail("poison" as const) : Effect.void
            )
        })
        const options = { pollInterval: "20 millis", batchSize: 7, leaseTtl: "1 second", leaseRecheckInterval: "100 millis", retry: Schedule.spaced("1 millis"), maxAttempts: 2 } as const
        const start = (workerId: string) =>
          Effect.gen(function* () {
            const scope = yield* Scope.make()
            const runner = yield* ProjectionRunner.run([projection], { ...options, workerId }).pipe(Scope.extend(scope))
            return { runner, scope }
          })
        const a = yield* start("dl-a")
        const b = yield* start("dl-b")
        const leads = (r: typeof a) => Effect.map(r.runner.status, (s) => s[0]!.state === "leader")
        yield* waitUntil(Effect.map(Effect.all([leads(a), leads(b)]), ([x, y]) => x || y), "a leader")
        let survivor = a
        for (let s = 0; s < streams; s++) {
          yield* EventStore.append(`dlrep-${s}`, "dlrep", ExpectedVersion.NoStream, [1, 2, 3].map((v) => ({ eventType: "dl.marked", schemaVersion: 1, data: { v } })))
          if (s === streams / 2) {
            // Stop whichever leads: the other takes over.
            const leading = (yield* leads(a)) ? a : b
            survivor = leading === a ? b : a
            yield* Scope.close(leading.scope, Exit.void)
          }
        }
        yield* waitUntil(leads(survivor), "the other replica to take over")
        yield* survivor.runner.whenCaughtUp(subscriptionId, "60 seconds")
        const rows = yield* model.rows(`${subscriptionId}:`)
        const expected: Array<string> = []
        const letters: Array<string> = []
        for (let s = 0; s < streams; s++) {
          for (let v = 1; v <= 3; v++) {
            const key = `dlrep-${s}@${v}`
            if (s % 4 === 0 && v >= 2) letters.push(key)
            else expected.push(`${subscriptionId}:${key}`)
          }
        }
        assert.deepStrictEqual([...rows].sort(), expected.sort())
        const stored = yield* DeadLetters.list(Option.some(subscriptionId))
        assert.deepStrictEqual(stored.map((l) => `${l.streamId}@${l.streamVersion}`).sort(), letters.sort())
        assert.isTrue(stored.every((l) => (l.streamVersion === 2 ? l.status === "failed" && l.attempts === 2 : l.status === "parked")))
        yield* Scope.close(a.scope, Exit.void)
        yield* Scope.close(b.scope, Exit.void)
      }))

    it.effect("the store in another schema: its own es_dead_letters, nothing in public's", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const inSchema = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provide(effect, PgSchema.layer("dl_tenant"))
        yield* inSchema(PgMigrations.migrate())
        const store = yield* inSchema(Layer.build(PgStore.layer))
        const category = "dltenant"
        yield* EventStore.append(`${category}-1`, category, ExpectedVersion.NoStream, [{ eventType: "dl.marked", schemaVersion: 1, data: {} }]).pipe(
          Effect.provide(store)
        )
        const runner = yield* ProjectionRunner.run(
          [Projection.atLeastOnce({ subscriptionId: "dl-tenant", categories: [category], onFailure: "skip", handle: () => Effect.fail("no") })],
          { workerId: "t", pollInterval: "20 millis", retry: Schedule.spaced("1 millis"), maxAttempts: 1 }
        ).pipe(Effect.provide(store))
        yield* runner.whenCaughtUp("dl-tenant", "60 seconds")
        const [row] = yield* sql<{ n: number }>`SELECT count(*)::int4 AS n FROM "dl_tenant".es_dead_letters`
        assert.strictEqual(row!.n, 1)
        const [public_] = yield* sql<{ n: number }>`SELECT count(*)::int4 AS n FROM public.es_dead_letters WHERE subscription_id = 'dl-tenant'`
        assert.strictEqual(public_!.n, 0)
      }).pipe(Effect.scoped))
  })
})
