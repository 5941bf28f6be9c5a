#!/usr/bin/env node
/**
 * Checks packed tarballs: each holds package.json, README.md, LICENSE and
 * dist/ (compiled .js, .d.ts, .d.ts.map) and nothing else, no tests or
 * TypeScript sources; every `exports`/`main`/`types`/`bin` target exists; and
 * @mire/pg holds every file of the top-level migrations/, byte for byte.
 * The conformance suites (@mire/core/conformance) are shipped code, not tests:
 * every module of packages/core/src/conformance/ must be in dist/conformance/,
 * and they are the only shipped modules that may import a test framework
 * (vitest, @effect/vitest, optional peers that only that entry needs).
 * Prints each tarball's contents summary and sizes.
 *
 * Usage: node scripts/check-tarballs.mjs [folder, default .pack]
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { pathToFileURL } from "node:url"
import { root } from "./packages.mjs"

const read = (tarball, file) => execFileSync("tar", ["-xOzf", tarball, `package/${file}`])

/** Every target path named by a package.json's main/types/bin/exports (patterns skipped). */
export const targets = (manifest) => {
  const out = []
  const walk = (value) => {
    if (typeof value === "string") {
      if (!value.includes("*") && !value.startsWith("./src/") && value !== "./package.json") out.push(value)
    } else if (value !== null && typeof value === "object") Object.values(value).forEach(walk)
  }
  walk([manifest.main, manifest.types, manifest.bin, manifest.exports])
  return out.map((t) => t.replace(/^\.\//, ""))
}

/**
 * A test file: under a test folder or named `*.test.*`/`*.spec.*`. The
 * conformance suites (`dist/conformance/*Suite.js`) are neither: they are the
 * shipped contract, registered by a driver's own test files.
 */
const isTest = (file) => /(^|\/)(test|tests|__tests__)\/|\.(test|spec)\.[a-z.]+$/.test(file)

const allowed = (name, file) =>
  file === "package.json" ||
  file === "README.md" ||
  file === "LICENSE" ||
  (/^dist\/.+\.(js|d\.ts|d\.ts\.map)$/.test(file) && !isTest(file)) ||
  (name === "@mire/pg" && /^migrations\/\d{4}_[a-z0-9_]+\.sql$/.test(file))

/** The test frameworks a shipped module imports (static or dynamic). */
const testFrameworks = (source) =>
  [...source.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)["'](vitest|@effect\/vitest)(?:\/[^"']*)?["']/g)].map((m) => m[1])

/** The conformance entry ships every module of src/conformance. */
const checkConformance = (manifest, files, problem) => {
  const conformance = readdirSync(`${root}/packages/core/src/conformance`).filter((f) => f.endsWith(".ts"))
  for (const module of conformance) {
    const base = `dist/conformance/${module.replace(/\.ts$/, "")}`
    for (const file of [`${base}.js`, `${base}.d.ts`]) if (!files.includes(file)) problem(`missing ${file} (conformance)`)
  }
  if (manifest.exports?.["./conformance"]?.import !== "./dist/conformance/index.js") problem("no ./conformance export")
}

/**
 * Only @mire/core's dist/conformance/ may import a test framework, and only
 * one declared as an optional peer: a user who never imports the conformance
 * entry never needs vitest.
 */
const checkTestFrameworks = (path, name, manifest, files, problem) => {
  const work = mkdtempSync(`${tmpdir()}/mire-tarball-`)
  const imported = new Set()
  try {
    execFileSync("tar", ["-xzf", path, "-C", work])
    for (const file of files.filter((f) => f.endsWith(".js") || f.endsWith(".d.ts"))) {
      const frameworks = testFrameworks(readFileSync(`${work}/package/${file}`, "utf8"))
      if (frameworks.length === 0) continue
      if (name !== "@mire/core" || !file.startsWith("dist/conformance/"))
        problem(`${file} imports ${frameworks.join(", ")} outside @mire/core's dist/conformance/`)
      for (const peer of frameworks) imported.add(peer)
    }
    for (const peer of imported)
      if (manifest.peerDependenciesMeta?.[peer]?.optional !== true)
        problem(`a shipped module imports ${peer}, which is not an optional peer dependency`)
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

/** Checks the named tarballs in `folder`; prints a summary; false when any check failed. */
export const checkTarballs = (folder, tarballs) => {
  const problems = []
  const migrations = readdirSync(`${root}/migrations`).filter((f) => f.endsWith(".sql")).sort()
  const seen = new Set()
  for (const tarball of tarballs.sort()) {
    const path = `${folder}/${tarball}`
    const entries = execFileSync("tar", ["-tzf", path], { encoding: "utf8" }).split("\n").filter((l) => l !== "" && !l.endsWith("/"))
    const files = entries.map((e) => e.replace(/^package\//, ""))
    const manifest = JSON.parse(read(path, "package.json").toString("utf8"))
    const name = manifest.name
    seen.add(name)
    const problem = (text) => problems.push(`${tarball}: ${text}`)
    for (const file of files) if (!allowed(name, file)) problem(`unexpected file ${file}`)
    for (const file of ["README.md", "LICENSE", ...targets(manifest)])
      if (!files.includes(file)) problem(`missing ${file}`)
    if (!files.some((f) => f.startsWith("dist/") && f.endsWith(".d.ts.map"))) problem("no declaration maps")
    if (name === "@mire/core") checkConformance(manifest, files, problem)
    checkTestFrameworks(path, name, manifest, files, problem)
    if (name === "@mire/pg") {
      for (const file of migrations) {
        if (!files.includes(`migrations/${file}`)) problem(`missing migrations/${file}`)
        else if (!read(path, `migrations/${file}`).equals(readFileSync(`${root}/migrations/${file}`)))
          problem(`migrations/${file} differs from the top-level migrations/${file}`)
      }
    }
    const dist = files.filter((f) => f.startsWith("dist/"))
    const count = (suffix) => dist.filter((f) => f.endsWith(suffix)).length
    const other = files.filter((f) => !f.startsWith("dist/"))
    console.log(
      `${tarball}: ${(statSync(path).size / 1024).toFixed(1)} kB packed, ${files.length} files: ` +
        `dist/ (${count(".js")} .js, ${count(".d.ts")} .d.ts, ${count(".d.ts.map")} .d.ts.map), ` +
        other.filter((f) => !f.startsWith("migrations/")).join(", ") +
        (name === "@mire/pg" ? `, migrations/ (${other.filter((f) => f.startsWith("migrations/")).length} .sql)` : "")
    )
  }
  for (const name of ["@mire/core", "@mire/pg", "@mire/cli"]) if (!seen.has(name)) problems.push(`no tarball of ${name}`)
  for (const p of problems) console.error(`tarball check FAILED: ${p}`)
  return problems.length === 0
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const folder = process.argv[2] ?? `${root}/.pack`
  if (!checkTarballs(folder, readdirSync(folder).filter((f) => f.endsWith(".tgz")))) process.exit(1)
}
