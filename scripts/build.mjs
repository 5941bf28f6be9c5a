#!/usr/bin/env node
/**
 * `npm run build`: a clean build of every publishable package (`tsc -b` over
 * the project references of tsconfig.build.json, ESM + .d.ts + declaration
 * maps in each package's dist/), then the migrations copied into @mire/pg.
 *
 * Cleans first, so a deleted source file cannot leave a stale module in dist/.
 */
import { spawnSync } from "node:child_process"
import { chmodSync, existsSync, rmSync } from "node:fs"
import { copyMigrations } from "./copy-migrations.mjs"
import { packages, root } from "./packages.mjs"

for (const pkg of packages) {
  rmSync(`${root}/packages/${pkg}/dist`, { recursive: true, force: true })
  rmSync(`${root}/packages/${pkg}/tsconfig.build.tsbuildinfo`, { force: true })
}
const tsc = spawnSync(process.execPath, [`${root}/node_modules/typescript/bin/tsc`, "-b", `${root}/tsconfig.build.json`], {
  stdio: "inherit"
})
if (tsc.status !== 0) {
  console.error("build failed: tsc -b tsconfig.build.json reported errors")
  process.exit(tsc.status ?? 1)
}
copyMigrations()
const bin = `${root}/packages/cli/dist/bin.js`
if (existsSync(bin)) chmodSync(bin, 0o755)
console.log(`built ${packages.map((p) => `@mire/${p}`).join(", ")}`)
