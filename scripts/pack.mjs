#!/usr/bin/env node
/**
 * `npm run pack`: builds, then packs every publishable package into .pack/
 * (gitignored) and checks the tarballs (scripts/check-tarballs.mjs).
 * `--no-build` packs what dist/ holds now.
 */
import { spawnSync } from "node:child_process"
import { mkdirSync, readdirSync, rmSync } from "node:fs"
import { checkTarballs } from "./check-tarballs.mjs"
import { packages, root } from "./packages.mjs"

const run = (command, args, stdout = "inherit") => {
  const result = spawnSync(command, args, { cwd: root, stdio: ["ignore", stdout, "inherit"] })
  if (result.status !== 0) {
    console.error(`pack failed: ${command} ${args.join(" ")} exited ${result.status ?? result.signal}`)
    process.exit(1)
  }
}

if (!process.argv.includes("--no-build")) run(process.execPath, [`${root}/scripts/build.mjs`])
const destination = `${root}/.pack`
rmSync(destination, { recursive: true, force: true })
mkdirSync(destination)
run("npm", [
  "pack",
  "--silent",
  ...packages.map((p) => `--workspace=packages/${p}`),
  `--pack-destination=${destination}`
], "ignore")
const tarballs = readdirSync(destination).filter((f) => f.endsWith(".tgz"))
if (!checkTarballs(destination, tarballs)) process.exit(1)
