/**
 * Applies mire's schema: the numbered `.sql` files of `migrations/`, shipped
 * with this package and applied in order, each once.
 *
 * Safe when several replicas start at once: the run holds a
 * transaction-scoped lock (`pg_advisory_xact_lock`, released at COMMIT, so it
 * is safe behind PgBouncer's transaction pooling), waits for it at most
 * `lockTimeout`, and applies every pending file in that one transaction.
 * Every failure is a typed {@link MigrationError}, never a defect.
 *
 * (`@effect/sql`'s `Migrator` is not used: it turns a failing migration into
 * a defect, its tracking table is created outside its lock, and it skips any
 * file numbered below the newest applied one.)
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import { access, readdir, readFile } from "node:fs/promises"
import { fileURLToPath } from "node:url"
import { kindOf } from "./internal/errors.js"

/**
 * A migration run failed: `reason` says at which step.
 *
 * @since 0.1.0
 * @category errors
 */
export class MigrationError extends Data.TaggedError("MigrationError")<{
  readonly reason: "load" | "lock-timeout" | "failed"
  readonly migration?: string
  readonly cause: unknown
}> {
  override get message(): string {
    const detail = Predicate.hasProperty(this.cause, "message") ? String(this.cause.message) : String(this.cause)
    return `migration ${this.reason}${this.migration === undefined ? "" : ` (${this.migration})`}: ${detail}`
  }
}

/**
 * One migration file.
 *
 * @since 0.1.0
 * @category models
 */
export interface Migration {
  readonly id: number
  readonly name: string
  readonly sql: string
}

/**
 * Where the migration files are: `migrations/` beside `dist/` in the installed
 * package (copied there by the build), or, running from the TypeScript sources
 * in mire's workspace, the workspace's top-level `migrations/`, their one source.
 */
const directories = (import.meta.url.endsWith(".ts") ? ["../../../migrations/", "../migrations/"] : ["../migrations/"]).map(
  (path) => fileURLToPath(new URL(path, import.meta.url))
)

const directory = Effect.findFirst(directories, (dir) =>
  Effect.promise(() =>
    access(dir).then(
      () => true,
      () => false
    )
  )
).pipe(
  Effect.flatMap(
    Option.match({
      onNone: () =>
        Effect.fail(new MigrationError({ reason: "load", cause: `no migrations directory at ${directories.join(" or ")}` })),
      onSome: Effect.succeed
    })
  )
)

/**
 * Reads the shipped migration files, in order.
 *
 * @since 0.1.0
 */
export const load: Effect.Effect<ReadonlyArray<Migration>, MigrationError> = Effect.flatMap(directory, (directory) =>
  Effect.tryPromise({
    try: async () => {
      const files = (await readdir(directory)).filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f)).sort()
      return Promise.all(
        files.map(async (file) => ({
          id: Number(file.slice(0, 4)),
          name: file.replace(/\.sql$/, ""),
          sql: await readFile(`${directory}${file}`, "utf8")
        }))
      )
    },
    catch: (cause) => new MigrationError({ reason: "load", cause })
  })
)

/** A row of `es_migrations` (its id is all mire reads). */
const decodeApplied = Schema.decodeUnknown(Schema.Array(Schema.Struct({ id: Schema.Int })))

/** Whether `es_migrations` exists. */
const decodeTracked = Schema.decodeUnknown(Schema.Tuple([Schema.Struct({ present: Schema.Boolean })], Schema.Unknown))

const pendingOf = (migrations: ReadonlyArray<Migration>, applied: ReadonlyArray<{ readonly id: number }>) => {
  const ids = new Set(applied.map((row) => row.id))
  return migrations.filter((m) => !ids.has(m.id))
}

/**
 * The migrations {@link migrate} would apply now, in order, with their SQL
 * (for a dry run). Reads only; takes no lock.
 *
 * @example
 * ```ts
 * import { PgMigrations } from "@mire/pg"
 * import { Effect } from "effect"
 *
 * const program = Effect.gen(function* () {
 *   const todo = yield* PgMigrations.pending
 *   yield* Effect.log(`${todo.length} migrations to apply`)
 * })
 * ```
 * @since 0.1.0
 */
export const pending: Effect.Effect<ReadonlyArray<Migration>, MigrationError, SqlClient.SqlClient> = Effect.gen(
  function* () {
    const migrations = yield* load
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const applied = yield* Effect.gen(function* () {
      const [tracked] = yield* Effect.flatMap(sql`SELECT to_regclass('es_migrations') IS NOT NULL AS present`, decodeTracked)
      return tracked.present ? yield* Effect.flatMap(sql`SELECT id FROM es_migrations`, decodeApplied) : []
    }).pipe(
      Effect.mapError(
        (error) => new MigrationError({ reason: "failed", cause: error._tag === "SqlError" ? (error.cause ?? error) : error })
      )
    )
    return pendingOf(migrations, applied)
  }
).pipe(Effect.withSpan("PgMigrations.pending"))

/**
 * Applies the pending migrations; returns the names it applied (empty when
 * the schema is current).
 *
 * @example
 * ```ts
 * import { PgMigrations } from "@mire/pg"
 * import { Effect } from "effect"
 *
 * // At startup, before the stores are used; concurrent replicas take turns.
 * const program = Effect.gen(function* () {
 *   const applied = yield* PgMigrations.migrate({ lockTimeout: "30 seconds" })
 *   yield* Effect.log(`applied ${applied.length} migrations`)
 * })
 * ```
 * @since 0.1.0
 */
export const migrate = (
  options: { readonly lockTimeout?: Duration.DurationInput } = {}
): Effect.Effect<ReadonlyArray<string>, MigrationError, SqlClient.SqlClient> =>
  Effect.gen(function* () {
    const migrations = yield* load
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const timeout = Math.max(1, Math.round(Duration.toMillis(options.lockTimeout ?? "30 seconds")))
    let current = "lock"
    const run = Effect.gen(function* () {
      yield* sql.unsafe(`SET LOCAL lock_timeout = ${timeout}`)
      yield* sql`SELECT pg_advisory_xact_lock(hashtext('mire.migrations'))`
      yield* sql`CREATE TABLE IF NOT EXISTS es_migrations (
        id integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`
      yield* sql.unsafe("SET LOCAL lock_timeout = 0")
      const pending = pendingOf(migrations, yield* Effect.flatMap(sql`SELECT id FROM es_migrations`, decodeApplied))
      for (const migration of pending) {
        current = migration.name
        yield* sql.unsafe(migration.sql)
        yield* sql`INSERT INTO es_migrations (id, name) VALUES (${migration.id}, ${migration.name})`
      }
      return pending.map((m) => m.name)
    })
    const toError = (error: unknown) =>
      new MigrationError({
        reason: current === "lock" && kindOf(error) === "LockNotAvailable" ? "lock-timeout" : "failed",
        migration: current,
        cause: Predicate.hasProperty(error, "cause") ? error.cause : error
      })
    return yield* sql.withTransaction(run).pipe(
      Effect.catchAll((error) => Effect.fail(toError(error))),
      Effect.catchAllDefect((defect) => Effect.fail(toError(defect)))
    )
  }).pipe(Effect.withSpan("PgMigrations.migrate"))
