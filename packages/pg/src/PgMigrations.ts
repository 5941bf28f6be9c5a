/**
 * Applies mire's schema: the numbered `.sql` files of `migrations/`, shipped
 * with this package and applied in order, each once, in the `PgSchema`'s
 * schema (default `public`; created when missing). The files name objects
 * unqualified: the run sets `search_path` to that schema alone while it
 * applies them, and keeps its tracking table (`es_migrations`) there too.
 *
 * Safe when several replicas start at once: each pending file is applied in
 * a transaction of its own, which takes a transaction-scoped lock
 * (`pg_advisory_xact_lock`, released at COMMIT, so it is safe behind
 * PgBouncer's transaction pooling), waits for it at most `lockTimeout`, and
 * re-reads under it which file is next (another replica may have applied
 * it). So the locks a file takes (an `ALTER TABLE`'s ACCESS EXCLUSIVE, an
 * index build's SHARE) end with that file, not with the whole run; a failing
 * file leaves the earlier ones applied and is named in the error. Every
 * failure is a typed {@link MigrationError}, never a defect.
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
import * as PgSchema from "./PgSchema.js"

/**
 * A migration run failed: `reason` says at which step.
 *
 * @since 0.1.0
 * @category errors
 */
export class MigrationError extends Data.TaggedError("MigrationError")<{
  readonly reason: "load" | "lock-timeout" | "failed"
  /** The file being applied (or `lock` while the lock was taken). */
  readonly migration?: string
  /** The files this run applied (and committed) before the failure (since 0.2.0). */
  readonly applied?: ReadonlyArray<string>
  readonly cause: unknown
}> {
  override get message(): string {
    const detail = Predicate.hasProperty(this.cause, "message") ? String(this.cause.message) : String(this.cause)
    const applied = this.applied === undefined || this.applied.length === 0 ? "" : ` (applied before it: ${this.applied.join(", ")})`
    return `migration ${this.reason}${this.migration === undefined ? "" : ` (${this.migration})`}: ${detail}${applied}`
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

/** Whether `es_migrations` (or the schema) exists. */
const decodeTracked = Schema.decodeUnknown(Schema.Tuple([Schema.Struct({ present: Schema.Boolean })], Schema.Unknown))

/**
 * The key of the migration lock: one per schema, `mire.migrations` in
 * `public` (the key older releases take, so they take turns with this one).
 */
const lockKey = (names: PgSchema.Names): string =>
  names.schema === "public" ? "mire.migrations" : `mire.migrations.${names.schema}`

/** The session's `search_path`. */
const decodeSearchPath = Schema.decodeUnknown(Schema.Tuple([Schema.Struct({ path: Schema.String })], Schema.Unknown))

/** The schema `es_migrations` resolves to through the session's `search_path`, when not `public`. */
const decodeElsewhere = Schema.decodeUnknown(Schema.Array(Schema.Struct({ schema: Schema.String })))

/**
 * Refuses to install mire in `public` when the session's `search_path`
 * finds it installed in another schema (a release before schemas created
 * its tables in the first schema of the path): a second, empty install
 * would split the log. Other schemas are named explicitly and not checked.
 */
const notElsewhere = (sql: SqlClient.SqlClient, names: PgSchema.Names): Effect.Effect<void, MigrationError> =>
  names.schema !== "public"
    ? Effect.void
    : sql`
        SELECT n.nspname AS schema FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = to_regclass('es_migrations') AND n.nspname <> 'public'
          AND to_regclass(${names.qualify("es_migrations")}) IS NULL`.pipe(
        Effect.flatMap(decodeElsewhere),
        Effect.mapError((error) => new MigrationError({ reason: "failed", cause: error._tag === "SqlError" ? (error.cause ?? error) : error })),
        Effect.flatMap((rows) =>
          rows[0] === undefined
            ? Effect.void
            : Effect.fail(
                new MigrationError({
                  reason: "failed",
                  cause: new Error(
                    `mire is installed in schema "${rows[0].schema}" (found through the search_path), not in public: use that schema (PgSchema.layer("${rows[0].schema}"), mire --schema ${rows[0].schema})`
                  )
                })
              )
        )
      )

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
    const names = yield* PgSchema.PgSchema
    yield* notElsewhere(sql, names)
    const applied = yield* Effect.gen(function* () {
      const [tracked] = yield* Effect.flatMap(
        sql`SELECT to_regclass(${names.qualify("es_migrations")}) IS NOT NULL AS present`,
        decodeTracked
      )
      return tracked.present ? yield* Effect.flatMap(sql`SELECT id FROM ${names.migrations}`, decodeApplied) : []
    }).pipe(
      Effect.mapError(
        (error) => new MigrationError({ reason: "failed", cause: error._tag === "SqlError" ? (error.cause ?? error) : error })
      )
    )
    return pendingOf(migrations, applied)
  }
).pipe(Effect.withSpan("PgMigrations.pending"))

/**
 * Applies the pending migrations, each in a transaction of its own (see
 * the module's description); returns the names it applied (empty when the
 * schema is current). A failing file fails the run with a
 * {@link MigrationError} naming it (`migration`) and the files applied before
 * it (`applied`), which stay applied.
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
    const names = yield* PgSchema.PgSchema
    yield* notElsewhere(sql, names)
    const timeout = Math.max(1, Math.round(Duration.toMillis(options.lockTimeout ?? "30 seconds")))
    const applied: Array<string> = []
    let current = "lock"
    // One transaction: the lock, then the next file still pending under it (none: the schema is current).
    const applyNext = Effect.gen(function* () {
      current = "lock"
      yield* sql.unsafe(`SET LOCAL lock_timeout = ${timeout}`)
      yield* sql`SELECT pg_advisory_xact_lock(hashtext(${lockKey(names)}))`
      // Created only when missing: `CREATE SCHEMA IF NOT EXISTS` needs the CREATE privilege even then.
      const [schema] = yield* Effect.flatMap(
        sql`SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = ${names.schema}) AS present`,
        decodeTracked
      )
      if (!schema.present) yield* sql.unsafe(`CREATE SCHEMA ${names.quoted}`)
      yield* sql`CREATE TABLE IF NOT EXISTS ${names.migrations} (
        id integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`
      yield* sql.unsafe("SET LOCAL lock_timeout = 0")
      const next = pendingOf(migrations, yield* Effect.flatMap(sql`SELECT id FROM ${names.migrations}`, decodeApplied))[0]
      if (next === undefined) return Option.none<string>()
      // The files name objects unqualified, and their functions pin this path (`SET search_path FROM CURRENT`).
      const [previous] = yield* Effect.flatMap(sql`SELECT current_setting('search_path') AS path`, decodeSearchPath)
      yield* sql.unsafe(`SET LOCAL search_path TO ${names.quoted}`)
      current = next.name
      yield* sql.unsafe(next.sql)
      yield* sql`INSERT INTO ${names.migrations} (id, name) VALUES (${next.id}, ${next.name})`
      // Inside a caller's transaction (a savepoint), SET LOCAL would outlive this step.
      yield* sql`SELECT set_config('search_path', ${previous.path}, true)`
      return Option.some(next.name)
    })
    const toError = (error: unknown) =>
      new MigrationError({
        reason: current === "lock" && kindOf(error) === "LockNotAvailable" ? "lock-timeout" : "failed",
        migration: current,
        applied: [...applied],
        cause: Predicate.hasProperty(error, "cause") ? error.cause : error
      })
    // At most one step per file, plus the one that finds nothing pending.
    for (let step = 0; step <= migrations.length; step++) {
      const done = yield* sql.withTransaction(applyNext).pipe(
        Effect.catchAll((error) => Effect.fail(toError(error))),
        Effect.catchAllDefect((defect) => Effect.fail(toError(defect)))
      )
      if (Option.isNone(done)) break
      applied.push(done.value)
    }
    return applied
  }).pipe(Effect.withSpan("PgMigrations.migrate"))
