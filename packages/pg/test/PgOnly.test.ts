/**
 * Postgres-only behaviour: user SQL inside a scope, concurrent migrations,
 * conflicts at statement time.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as PgMigrations from "../src/PgMigrations.js"
import pg from "pg"
import { clientLayer, database, storeLayer, TestDatabase } from "./utils.js"

const ev = { eventType: "test.marked", schemaVersion: 1, data: { mark: "x" } }

describe("PgEventStore", () => {
  layer(storeLayer(), { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.effect("the user's own sql runs in the scope's transaction: committed or rolled back with the events", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE IF NOT EXISTS audit (note text)`
        const scope = (note: string, fail: boolean) =>
          EventStore.transaction(
            Effect.gen(function* () {
              yield* sql`INSERT INTO audit (note) VALUES (${note})`
              yield* EventStore.append(`usr-${note}`, "usr", ExpectedVersion.NoStream, [ev])
              if (fail) return yield* Effect.fail("no")
            })
          )
        yield* scope("kept", false)
        yield* Effect.either(scope("dropped", true))
        const notes = (yield* sql<{ note: string }>`SELECT note FROM audit ORDER BY note`).map((r) => r.note)
        assert.deepStrictEqual(notes, ["kept"])
        assert.strictEqual(yield* EventStore.streamVersion("usr-kept"), 1)
        assert.strictEqual(yield* EventStore.streamVersion("usr-dropped"), 0)
      }))

    it.effect("a losing writer gets a typed conflict at statement time and leaves no rows", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const results = yield* Effect.all(
          Array.from({ length: 12 }, () => Effect.either(EventStore.append("race-new", "race", ExpectedVersion.NoStream, [ev, ev]))),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(results.filter(Either.isRight).length, 1)
        for (const r of results) if (Either.isLeft(r)) assert.strictEqual(r.left._tag, "ConcurrencyConflict")
        const [row] = yield* sql<{ n: number; v: number }>`
          SELECT count(*)::int AS n, (SELECT version::int FROM es_streams WHERE stream_id = 'race-new') AS v
          FROM es_events WHERE stream_id = 'race-new'`
        assert.deepStrictEqual(row, { n: 2, v: 2 })
      }))

    it.effect("migrate is idempotent", () =>
      Effect.gen(function* () {
        assert.deepStrictEqual(yield* PgMigrations.migrate(), [])
      }))
  })

  layer(clientLayer({ maxConnections: 20 }).pipe(Layer.provideMerge(database)), {
    timeout: "60 seconds",
    excludeTestServices: true
  })((it) => {
    it.effect("several replicas migrating at once: each file applied exactly once", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const runs = yield* Effect.all(
          Array.from({ length: 6 }, () => PgMigrations.migrate()),
          { concurrency: "unbounded" }
        )
        const applied = runs.flat()
        const files = (yield* PgMigrations.load).map((m) => m.name)
        assert.deepStrictEqual([...applied].sort(), [...files].sort())
        const rows = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM es_migrations`
        assert.strictEqual(rows[0]!.n, files.length)
      }))

    it.effect("a lock held too long is a typed lock-timeout, not a defect", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        // Another session holds the migration lock in an open transaction.
        yield* Effect.acquireRelease(
          Effect.promise(async () => {
            const client = new pg.Client({ connectionString: url })
            await client.connect()
            await client.query("BEGIN")
            await client.query("SELECT pg_advisory_xact_lock(hashtext('mire.migrations'))")
            return client
          }),
          (client) => Effect.promise(() => client.end())
        )
        const error = yield* Effect.flip(PgMigrations.migrate({ lockTimeout: "300 millis" }))
        assert.strictEqual(error._tag, "MigrationError")
        assert.strictEqual(error.reason, "lock-timeout")
      }).pipe(Effect.scoped))
  })
})
