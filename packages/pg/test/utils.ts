/**
 * Test rig: a fresh database per test file on the run's PostgreSQL server
 * (`DATABASE_URL`, or the embedded server the global setup started), with
 * mire's migrations applied, dropped when the file's layer closes.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import pg from "pg"
import * as PgEventStore from "../src/PgEventStore.js"
import * as PgMigrations from "../src/PgMigrations.js"

/** The server URL of this test run; a missing server is a failure, never a skip. */
export const serverUrl = (): string => {
  const url = process.env.MIRE_TEST_DATABASE_URL ?? process.env.DATABASE_URL
  if (url === undefined || url === "") throw new Error("no test database: the global setup did not run")
  return url
}

const withDatabase = (url: string, database: string): string => {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

const admin = async <A>(f: (client: pg.Client) => Promise<A>): Promise<A> => {
  const client = new pg.Client({ connectionString: serverUrl() })
  await client.connect()
  try {
    return await f(client)
  } finally {
    await client.end()
  }
}

/** The URL of this file's database. */
export class TestDatabase extends Context.Tag("test/TestDatabase")<TestDatabase, { readonly url: string }>() {}

/** Creates an empty database, dropped when the scope closes. */
export const database: Layer.Layer<TestDatabase> = Layer.scoped(
  TestDatabase,
  Effect.acquireRelease(
    Effect.promise(async () => {
      const name = `mire_test_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`
      await admin((c) => c.query(`CREATE DATABASE ${name}`))
      return { name, url: withDatabase(serverUrl(), name) }
    }),
    ({ name }) => Effect.promise(() => admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))).pipe(Effect.ignore)
  )
)

/** A `PgClient` on this file's database (not migrated). */
export const clientLayer = (options: { readonly maxConnections?: number } = {}): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, never, TestDatabase> =>
  Layer.unwrapEffect(
    Effect.map(TestDatabase, ({ url }) =>
      PgClient.layer({ url: Redacted.make(url), maxConnections: options.maxConnections ?? 30 })
    )
  ).pipe(Layer.orDie)

/** A migrated database and its client. */
export const migratedLayer = (options: { readonly maxConnections?: number } = {}) =>
  Layer.effectDiscard(PgMigrations.migrate().pipe(Effect.orDie)).pipe(
    Layer.provideMerge(clientLayer(options)),
    Layer.provideMerge(database)
  )

/** The Postgres event store on a fresh, migrated database. */
export const storeLayer = (options: { readonly maxConnections?: number } = {}) =>
  PgEventStore.layer.pipe(Layer.provideMerge(migratedLayer(options)))
