#!/usr/bin/env node
/**
 * The `prepack` guard of each publishable package (run in its folder): every
 * file its package.json names (main, types, bin, exports) must exist, so a
 * `npm pack` or `npm publish` of an unbuilt checkout fails instead of
 * shipping a package without its JavaScript. It does not build: `npm run
 * pack` builds once for all packages, and `npm run pack -- --no-build` packs
 * what dist/ holds.
 */
import { existsSync, readFileSync } from "node:fs"
import { targets } from "./check-tarballs.mjs"

const manifest = JSON.parse(readFileSync("package.json", "utf8"))
const missing = [...new Set(targets(manifest))].filter((file) => !existsSync(file))
if (missing.length > 0) {
  console.error(`${manifest.name}: not built (missing ${missing.join(", ")}): run \`npm run build\` at the repository root first`)
  process.exit(1)
}
