/**
 * `PgStore.layerSchema` provides every service `PgStore.layer` does, each on
 * the schema's own tables: a dead letter (the DeadLetterStore a projection
 * with `onFailure: "skip"` needs) lands in the tenant's `es_dead_letters`,
 * not in `public`'s.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as CommandLog from "@mire/core/CommandLog"
import * as DeadLetters from "@mire/core/DeadLetters"
import type * as WorkerStore from "@mire/core/WorkerStore"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as PgMigrations from "../src/PgMigrations.js"
import * as PgSchema from "../src/PgSchema.js"
import * as PgStore from "../src/PgStore.js"
import { migratedLayer } from "./utils.js"

// Compile-time: the declared type names the three services the layer builds besides the four stores.
const provides = <E, R>(tenant: Layer.Layer<DeadLetters.DeadLetterStore | WorkerStore.WorkerStore | CommandLog.CommandLog, E, R>) =>
  tenant

describe("PgStore.layerSchema", () => {
  layer(migratedLayer(), { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.effect("provides the dead-letter store on the schema's own table", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* PgMigrations.migrate().pipe(Effect.provide(PgSchema.layer("tenant_dl")))
        const letter: DeadLetters.NewDeadLetter = {
          globalPosition: 1n,
          streamId: "acct-1",
          streamVersion: 1,
          eventType: "acct.opened",
          error: "boom",
          attempts: 3,
          status: "failed"
        }
        yield* Effect.flatMap(DeadLetters.DeadLetterStore, (store) => store.record("tenant-proj", [letter])).pipe(
          Effect.provide(provides(PgStore.layerSchema("tenant_dl")))
        )
        const inTenant = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM tenant_dl.es_dead_letters`
        const inPublic = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM public.es_dead_letters`
        assert.deepStrictEqual([inTenant[0]?.n, inPublic[0]?.n], [1, 0])
      }))
  })
})
