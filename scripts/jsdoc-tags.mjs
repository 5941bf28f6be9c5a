// Puts every JSDoc block tag on its own line.
//
// Doc tools read a block tag up to the next line that starts with a tag, so
// `/** @since 0.1.0 @category models */` reads as one `@since` whose value is
// "0.1.0 @category models", and `/** Lease acquisitions. @since 0.1.0 */` has no
// `@since` at all (it is part of the description). This rewrites such blocks as
//
//   /**
//    * Lease acquisitions.
//    *
//    * @since 0.1.0
//    */
//
// keeping the block's indentation. Blocks already in that shape are left
// byte-for-byte alone, so a second run changes nothing.
//
//   node scripts/jsdoc-tags.mjs [--check] [file or directory ...]
//
// Without paths it reads packages/*/src. `--check` rewrites nothing: it lists
// every block that would change and exits 1 if there is one (for CI).
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import path from "node:path"
import ts from "typescript"

// Only these start a block tag: `@` followed by anything else (`{@link x}`,
// `@effect/sql` in prose, a decorator in an example) is text.
const tags = [
  "since",
  "category",
  "example",
  "param",
  "returns",
  "throws",
  "deprecated",
  "internal",
  "experimental",
  "see",
  "template",
  "default",
  "remarks",
  "module",
  "typeParam"
]
const tagAt = new RegExp(`(^|\\s)@(?:${tags.join("|")})(?=\\s|$)`, "g")
const startsWithTag = new RegExp(`^@(?:${tags.join("|")})(?=\\s|$)`)

/** The text lines of a block, without `/**`, `*\/` and the leading ` * `. */
const contentLines = (block) => {
  const raw = block.slice(3, -2).split("\n")
  const lines = raw.map((line, i) => (i === 0 ? line.replace(/^ /, "") : line.replace(/^\s*\*? ?/, "")).trimEnd())
  while (lines.length > 0 && lines[0] === "") lines.shift()
  while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop()
  return lines
}

/** Splits each line before every tag that does not start it; code fences are left whole. */
const splitTags = (lines) => {
  const out = []
  let fenced = false
  let split = false
  let firstTag = -1
  for (const line of lines) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced
    if (fenced || /^\s*(```|~~~)/.test(line)) {
      out.push(line)
      continue
    }
    const cuts = [...line.matchAll(tagAt)].map((m) => m.index + m[1].length).filter((at) => at > 0)
    if (cuts.length === 0) {
      if (firstTag < 0 && startsWithTag.test(line)) firstTag = out.length
      out.push(line)
      continue
    }
    split = true
    const parts = [0, ...cuts].map((at, i, all) => line.slice(at, all[i + 1]).trim())
    for (const part of parts) {
      if (firstTag < 0 && startsWithTag.test(part)) {
        // A description runs into the first tag: a blank line separates them, as in a written-out block.
        if (out.length > 0 && out[out.length - 1] !== "") out.push("")
        firstTag = out.length
      }
      out.push(part)
    }
  }
  return split ? out : undefined
}

/** Every `/** … *\/` comment of a source file, from the parser's trivia (never inside strings). */
const jsdocRanges = (fileName, text) => {
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS)
  const seen = new Map()
  const visit = (node) => {
    for (const range of ts.getLeadingCommentRanges(text, node.pos) ?? []) {
      if (range.kind === ts.SyntaxKind.MultiLineCommentTrivia && text.startsWith("/**", range.pos) && range.end - range.pos > 4) {
        seen.set(range.pos, range)
      }
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
  visit(source.endOfFileToken)
  return [...seen.values()].sort((a, b) => a.pos - b.pos)
}

/** The rewritten file text and the 1-based lines of the blocks it changed. */
const rewrite = (fileName, text) => {
  const changed = []
  let out = ""
  let last = 0
  for (const { pos, end } of jsdocRanges(fileName, text)) {
    const lines = splitTags(contentLines(text.slice(pos, end)))
    if (lines === undefined) continue
    const lineStart = text.lastIndexOf("\n", pos - 1) + 1
    const indent = /^[ \t]*/.exec(text.slice(lineStart, pos))[0]
    const body = lines.map((line) => (line === "" ? `${indent} *` : `${indent} * ${line}`)).join("\n")
    out += text.slice(last, pos) + `/**\n${body}\n${indent} */`
    last = end
    changed.push(text.slice(0, pos).split("\n").length)
  }
  return { text: out + text.slice(last), changed }
}

const sources = (entry) => {
  if (statSync(entry).isDirectory()) {
    return readdirSync(entry)
      .filter((name) => name !== "node_modules" && name !== "dist" && !name.startsWith("."))
      .sort()
      .flatMap((name) => sources(path.join(entry, name)))
  }
  return /\.(c|m)?tsx?$/.test(entry) && !entry.endsWith(".d.ts") ? [entry] : []
}

const main = () => {
  const args = process.argv.slice(2)
  const check = args.includes("--check")
  const roots = args.filter((arg) => arg !== "--check")
  const packageSources = () =>
    readdirSync("packages")
      .map((name) => path.join("packages", name, "src"))
      .filter((dir) => statSync(dir, { throwIfNoEntry: false })?.isDirectory())
  const files = (roots.length > 0 ? roots : packageSources()).flatMap(sources)
  let blocks = 0
  for (const file of files) {
    const text = readFileSync(file, "utf8")
    const result = rewrite(file, text)
    if (result.changed.length === 0) continue
    blocks += result.changed.length
    if (check) {
      for (const line of result.changed) console.log(`${file}:${line}: JSDoc block with a tag that does not start its line`)
    } else {
      writeFileSync(file, result.text)
      console.log(`${file}: ${result.changed.length} block(s) rewritten`)
    }
  }
  if (check && blocks > 0) {
    console.error(`${blocks} JSDoc block(s) need one tag per line: run node scripts/jsdoc-tags.mjs`)
    process.exit(1)
  }
  console.log(`${files.length} files, ${blocks} block(s) ${check ? "to rewrite" : "rewritten"}`)
}

main()
