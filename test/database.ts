/**
 * Helpers shared by the bench and the scripts: a database URL on the same
 * server, and one administrative statement on a short-lived connection.
 */
import pg from "pg"

/** `url` with its database replaced by `database`. */
export const withDatabase = (url: string, database: string): string => {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

/** Runs one statement (e.g. `CREATE DATABASE …`) on its own connection to `url`. */
export const admin = async (url: string, statement: string): Promise<void> => {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    await client.query(statement)
  } finally {
    await client.end()
  }
}
