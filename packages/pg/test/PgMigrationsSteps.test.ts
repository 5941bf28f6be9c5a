/**
 * `PgMigrations.migrate` applies each file in a transaction of its own: a
 * failing later file leaves the earlier ones applied (committed), and the
 * error names the file that failed and those applied before it. A second
 * run resumes at the failed file.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as PgMigrations from "../src/PgMigrations.js"
import * as PgSchema from "../src/PgSchema.js"
import { clientLayer, database } from "./utils.js"

const inSchema = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provide(effect, PgSchema.layer("steps"))

describe("PgMigrations.migrate, one transaction per file", () => {
  layer(clientLayer().pipe(Layer.provideMerge(database)), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.effect("a failing later file leaves the earlier ones applied and is named; a second run resumes there", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const all = (yield* PgMigrations.load).map((m) => m.name)
        const failing = all.indexOf("0017_workers")
        assert.isAbove(failing, 0)
        // A table of the user's in the way of 0017's CREATE TABLE es_workers.
        yield* sql`CREATE SCHEMA steps`
        yield* sql`CREATE TABLE steps.es_workers (id int)`
        const error = yield* Effect.flip(inSchema(PgMigrations.migrate()))
        if (error._tag !== "MigrationError") return assert.fail(`expected a MigrationError, got ${error._tag}`)
        assert.strictEqual(error.reason, "failed")
        assert.strictEqual(error.migration, "0017_workers")
        assert.deepStrictEqual(error.applied, all.slice(0, failing))
        assert.include(error.message, "0017_workers")
        // The earlier files are committed (recorded, their objects there), the failed one is not.
        const recorded = yield* sql<{ name: string }>`SELECT name FROM steps.es_migrations ORDER BY id`
        assert.deepStrictEqual(
          recorded.map((r) => r.name),
          all.slice(0, failing)
        )
        const [dead] = yield* sql<{ present: boolean }>`SELECT to_regclass('steps.es_dead_letters') IS NOT NULL AS present`
        assert.isTrue(dead?.present)
        yield* sql`DROP TABLE steps.es_workers`
        assert.deepStrictEqual(yield* inSchema(PgMigrations.migrate()), all.slice(failing))
        assert.deepStrictEqual(yield* inSchema(PgMigrations.migrate()), [])
      }))
  })
})
