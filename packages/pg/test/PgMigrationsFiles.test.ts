/**
 * The migration files PgMigrations reads: from the sources in the workspace,
 * the top-level `migrations/` (their one source; there is no
 * `packages/pg/migrations` symlink any more). The built package reads the
 * copy beside its `dist/`, which scripts/consumer-test.sh checks in the
 * packed tarball.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { readdirSync, readFileSync } from "node:fs"
import * as PgMigrations from "../src/PgMigrations.js"

const topLevel = new URL("../../../migrations/", import.meta.url)

describe("PgMigrations.load", () => {
  it.effect("reads every file of the top-level migrations/, in order, as they are", () =>
    Effect.gen(function* () {
      const files = readdirSync(topLevel).filter((f) => f.endsWith(".sql")).sort()
      const loaded = yield* PgMigrations.load
      assert.deepStrictEqual(
        loaded.map((m) => `${m.name}.sql`),
        files
      )
      for (const m of loaded) {
        assert.strictEqual(m.id, Number(m.name.slice(0, 4)))
        assert.strictEqual(m.sql, readFileSync(new URL(`${m.name}.sql`, topLevel), "utf8"))
      }
    }))
})
