// The doc build, run in CI after lint. It fails on a broken example.
//
//   npm run docs                 # every package
//   npm run docs -- core pg      # some of them (skips the JSDoc tag check)
//
// 1. Every JSDoc tag starts its own line (scripts/jsdoc-tags.mjs --check):
//    doc tools read a tag up to the next tag line, so a one-line
//    `@since 0.1.0 @category x` would lose its category, and a description
//    followed by `@since` on the same line fails as "Missing @since".
// 2. Every `@example` of packages/*/src is one ```ts block, and type-checks
//    (see checkExamples: this covers the examples docgen skips).
// 3. @effect/docgen builds the API docs of the published packages (markdown,
//    in .docs/<package>/docs, gitignored); it type-checks the examples it
//    knows of again and runs them, so an `assert` in an example must hold.
//
// docgen reads the name and homepage of the package.json in its working
// directory and writes its examples under it, so each package is documented
// from a staging directory `.docs/<package>` that links the package's `src`.
// Examples import the package by name (`@mire/core`), which docgen points at
// that `src`; other workspace packages resolve through node_modules with the
// `@mire/source` condition, to their sources, so no build is needed first.
import { spawnSync } from "node:child_process"
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs"
import path from "node:path"
import ts from "typescript"

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..")
const published = ["core", "pg", "cli"]
const bin = (name) => path.join(root, "node_modules", ".bin", name)

// The examples are compiled as strictly as the sources are (tsconfig.base.json),
// except that a snippet may leave a value unused.
const examplesCompilerOptions = {
  noEmit: true,
  strict: true,
  exactOptionalPropertyTypes: true,
  noUncheckedIndexedAccess: true,
  skipLibCheck: true,
  target: "ES2022",
  lib: ["ES2022", "DOM"],
  types: ["node"],
  module: "preserve",
  moduleResolution: "bundler",
  customConditions: ["@mire/source"]
}

// docgen type-checks the examples of functions, constants, types and class
// methods, but not those on a class itself (errors, tags) or on a re-export.
// This checks every one, with the source line of each error: each ```ts block
// of an `@example` becomes a module under .docs/examples, and they are
// type-checked together with the TypeScript API.
const sourcesOf = (dir) =>
  readdirSync(dir).flatMap((name) => {
    const file = path.join(dir, name)
    if (statSync(file).isDirectory()) return name === "internal" ? [] : sourcesOf(file)
    return file.endsWith(".ts") && !file.endsWith(".d.ts") ? [file] : []
  })

const examplesOf = (file) => {
  const text = readFileSync(file, "utf8")
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS)
  const found = new Map()
  const visit = (node) => {
    for (const range of ts.getLeadingCommentRanges(text, node.pos) ?? []) {
      if (text.startsWith("/**", range.pos)) found.set(range.pos, range)
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
  const examples = []
  for (const { pos, end } of found.values()) {
    const line0 = text.slice(0, pos).split("\n").length
    const lines = text
      .slice(pos + 3, end - 2)
      .split("\n")
      .map((line, i) => (i === 0 ? line.replace(/^ /, "") : line.replace(/^\s*\* ?/, "")))
    let inExample = false
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]
      if (/^\s*@\w+/.test(line)) {
        inExample = /^\s*@example\b/.test(line)
        if (inExample && !/^\s*```ts\s*$/.test(lines[i + 1] ?? "")) {
          examples.push({ file, line: line0 + i, code: undefined })
        }
        continue
      }
      if (inExample && /^\s*```ts\s*$/.test(line)) {
        const close = lines.findIndex((l, j) => j > i && /^\s*```\s*$/.test(l))
        if (close < 0) {
          examples.push({ file, line: line0 + i, code: undefined })
          break
        }
        examples.push({ file, line: line0 + i + 1, code: lines.slice(i + 1, close).join("\n") })
        i = close
      }
    }
  }
  return examples
}

const checkExamples = (names) => {
  const started = Date.now()
  const dir = path.join(root, ".docs", "examples")
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  const examples = names.flatMap((name) => sourcesOf(path.join(root, "packages", name, "src"))).flatMap(examplesOf)
  const problems = []
  const files = new Map()
  examples.forEach((example, i) => {
    const where = `${path.relative(root, example.file)}:${example.line}`
    if (example.code === undefined) {
      problems.push(`${where}: an @example must be one \`\`\`ts block (closed), so that it is checked`)
      return
    }
    const file = path.join(dir, `example-${i}.ts`)
    const prelude = example.code.includes("assert.") ? `import * as assert from "node:assert"\n` : ""
    // An example without imports would be a script sharing one global scope with the others.
    writeFileSync(file, `${prelude}${example.code}\nexport {}\n`)
    files.set(file, { where, offset: prelude === "" ? 0 : 1 })
  })
  const options = ts.convertCompilerOptionsFromJson(
    {
      ...examplesCompilerOptions,
      baseUrl: root,
      // @mire/cli and @mire/examples have no exports map: their modules are imported by path.
      paths: { "@mire/cli/*": ["packages/cli/src/*"], "@mire/examples/*": ["packages/examples/src/*"] }
    },
    root
  )
  const program = ts.createProgram([...files.keys()], options.options)
  for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
    const origin = diagnostic.file && files.get(path.resolve(diagnostic.file.fileName))
    if (diagnostic.file !== undefined && origin === undefined) continue
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n")
    if (origin === undefined || diagnostic.start === undefined) {
      problems.push(message)
      continue
    }
    const { line, character } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start)
    const [file, at] = origin.where.split(":")
    problems.push(`${file}:${Number(at) + line - origin.offset}:${character + 4}: ${message}`)
  }
  for (const problem of problems) console.error(problem)
  const seconds = ((Date.now() - started) / 1000).toFixed(1)
  console.log(`examples: ${files.size} type-checked, ${problems.length} problem(s) in ${seconds} s`)
  return problems.length === 0
}

const run = (command, args, options) => {
  const result = spawnSync(command, args, { stdio: "inherit", ...options })
  if (result.error) throw result.error
  return result.status ?? 1
}

const document = (name) => {
  const started = Date.now()
  const pkg = JSON.parse(readFileSync(path.join(root, "packages", name, "package.json"), "utf8"))
  const stage = path.join(root, ".docs", name)
  rmSync(stage, { recursive: true, force: true })
  mkdirSync(stage, { recursive: true })
  symlinkSync(path.join(root, "packages", name, "src"), path.join(stage, "src"), "dir")
  writeFileSync(
    path.join(stage, "package.json"),
    JSON.stringify({ name: pkg.name, homepage: `https://www.npmjs.com/package/${pkg.name}` }, null, 2)
  )
  writeFileSync(
    path.join(stage, "docgen.json"),
    JSON.stringify(
      {
        srcDir: "src",
        outDir: "docs",
        // Not part of the public API: `internal/` is closed by the exports map.
        exclude: ["src/internal/**/*.ts", "src/**/internal/**/*.ts"],
        enforceVersion: true,
        parseCompilerOptions: path.join(root, "tsconfig.base.json"),
        examplesCompilerOptions
      },
      null,
      2
    )
  )
  const status = run(bin("docgen"), [], {
    cwd: stage,
    env: {
      ...process.env,
      PATH: `${path.join(root, "node_modules", ".bin")}${path.delimiter}${process.env.PATH ?? ""}`,
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --conditions=@mire/source`.trim()
    }
  })
  console.log(`docs ${pkg.name}: ${status === 0 ? "ok" : "FAILED"} in ${((Date.now() - started) / 1000).toFixed(1)} s`)
  return status === 0
}

const requested = process.argv.slice(2)
const unknown = requested.filter((name) => !published.includes(name))
if (unknown.length > 0) {
  console.error(`unknown package(s): ${unknown.join(", ")} (one of ${published.join(", ")})`)
  process.exit(2)
}
if (requested.length === 0 && run(process.execPath, [path.join(root, "scripts", "jsdoc-tags.mjs"), "--check"], { cwd: root }) !== 0) {
  process.exit(1)
}
const names = requested.length > 0 ? requested : published
// The examples package is not published (no API docs), but its examples are checked too.
if (!checkExamples(requested.length > 0 ? names : [...names, "examples"])) process.exit(1)
const failed = names.filter((name) => !document(name))
if (failed.length > 0) {
  console.error(`docs failed for ${failed.join(", ")}`)
  process.exit(1)
}
