/**
 * Runs a command with `DATABASE_URL` set to a fresh, empty database, dropped
 * afterwards: on the server of `DATABASE_URL` when it is set, else on an
 * embedded PostgreSQL started (and stopped) for the run. Exits with the
 * command's exit code.
 *
 * Usage: node --import tsx scripts/with-database.ts <command> [args…]
 */
import { spawn } from "node:child_process"
import { admin, withDatabase } from "../test/database.js"
import { startEmbedded } from "../test/embeddedPostgres.js"

const [command, ...args] = process.argv.slice(2)
if (command === undefined) {
  console.error("usage: with-database.ts <command> [args…]")
  process.exit(2)
}

const given = process.env["DATABASE_URL"]
const server = given === undefined || given === "" ? await startEmbedded() : undefined
const serverUrl = server?.url ?? given ?? ""
const name = `mire_consumer_${process.pid}_${Date.now().toString(36)}`
const url = new URL(withDatabase(serverUrl, name))
let code = 1
try {
  await admin(serverUrl, `CREATE DATABASE ${name}`)
  console.error(`[with-database] ${server === undefined ? "DATABASE_URL" : "embedded PostgreSQL"}: database ${name}`)
  code = await new Promise<number>((resolve) => {
    const child = spawn(command, args, { stdio: "inherit", env: { ...process.env, DATABASE_URL: url.href } })
    child.on("error", (error) => {
      console.error(`[with-database] ${command}: ${error.message}`)
      resolve(1)
    })
    child.on("exit", (exit, signal) => resolve(exit ?? (signal === null ? 1 : 128)))
  })
} finally {
  await admin(serverUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch((error: unknown) =>
    console.error(`[with-database] could not drop ${name}: ${String(error)}`)
  )
  await server?.stop()
}
process.exit(code)
