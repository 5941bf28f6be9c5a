#!/usr/bin/env node
/**
 * Copies the top-level migrations/*.sql (the one source of the schema) into
 * packages/pg/migrations/ as real files, which the @mire/pg tarball ships and
 * PgMigrations reads beside its dist/. Run by `npm run build` and by @mire/pg's
 * `prepack`. The copy is gitignored.
 */
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs"
import { pathToFileURL } from "node:url"
import { root } from "./packages.mjs"

/** Replaces packages/pg/migrations/ with a copy of migrations/; returns the file names. */
export const copyMigrations = () => {
  const from = `${root}/migrations`
  const to = `${root}/packages/pg/migrations`
  rmSync(to, { recursive: true, force: true })
  mkdirSync(to)
  const files = readdirSync(from).filter((f) => f.endsWith(".sql")).sort()
  for (const file of files) copyFileSync(`${from}/${file}`, `${to}/${file}`)
  return files
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  console.log(`copied ${copyMigrations().length} migrations into packages/pg/migrations/`)
}
