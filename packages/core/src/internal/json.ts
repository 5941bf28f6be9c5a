/**
 * JSON values at the store's boundary: one pass that checks a caller's value
 * is JSON PostgreSQL's `jsonb` stores unchanged, and writes its text with
 * object keys in `jsonb`'s order (by UTF-8 length, then bytewise), so the
 * in-memory store can keep exactly what Postgres returns (`JSON.parse` of
 * that text) and Postgres receives text it never re-serialises.
 *
 * And the decoding side: a Schema for stored JSON objects that never copies
 * (so a stored `__proto__` key stays an own property).
 */
import * as Schema from "effect/Schema"

/** Why a value is not JSON, with the path to it (innermost segment first while unwinding). */
export class JsonFault {
  readonly segments: Array<string | number> = []
  constructor(readonly reason: string) {}

  /** `prefix.items[3].price` */
  path(prefix: string): string {
    let out = prefix
    for (let i = this.segments.length - 1; i >= 0; i--) {
      const segment = this.segments[i]!
      out +=
        typeof segment === "number"
          ? `[${segment}]`
          : /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(segment)
            ? `.${segment}`
            : `[${JSON.stringify(segment)}]`
    }
    return out
  }
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is what this looks for
const suspicious = /[\u0000\ud800-\udfff]/

/** Why PostgreSQL cannot store a string (NUL, lone surrogate), or `undefined`. */
export const stringFault = (s: string): string | undefined => {
  if (!suspicious.test(s)) return undefined
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 0) return `contains NUL (\\u0000) at index ${i}, which PostgreSQL cannot store`
    if (c >= 0xd800 && c <= 0xdfff) {
      const next = s.charCodeAt(i + 1)
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        i++
        continue
      }
      return `contains a lone surrogate (\\u${c.toString(16)}) at index ${i}`
    }
  }
  return undefined
}

const utf8Length = (s: string): number => {
  let n = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c <= 0xdfff ? 2 : 3
  }
  return n
}

/** `jsonb`'s key order: shorter UTF-8 first, then bytewise (= code point order). */
export const compareKeys = (a: string, b: string): number => {
  const la = utf8Length(a)
  const lb = utf8Length(b)
  if (la !== lb) return la - lb
  let i = 0
  let j = 0
  while (i < a.length && j < b.length) {
    const ca = a.codePointAt(i)!
    const cb = b.codePointAt(j)!
    if (ca !== cb) return ca - cb
    i += ca > 0xffff ? 2 : 1
    j += cb > 0xffff ? 2 : 1
  }
  return 0
}

const sortedKeys = (keys: Array<string>): Array<string> => {
  for (let i = 1; i < keys.length; i++) {
    if (compareKeys(keys[i - 1]!, keys[i]!) > 0) return keys.sort(compareKeys)
  }
  return keys
}

const kindOf = (value: object): string => {
  const proto: unknown = Object.getPrototypeOf(value)
  const name =
    typeof proto === "object" && proto !== null && Object.hasOwn(proto, "constructor") && typeof proto.constructor === "function"
      ? proto.constructor.name
      : ""
  return name === "" ? "an object with a custom prototype" : `a ${name}`
}

interface State {
  text: string
  readonly maxDepth: number
  readonly maxSize: number
  /** Characters already spent elsewhere (the event's data, when writing its metadata). */
  readonly used: number
  readonly ancestors: Array<object>
}

const writeValue = (state: State, value: unknown, depth: number): JsonFault | undefined => {
  switch (typeof value) {
    case "string": {
      const fault = stringFault(value)
      if (fault !== undefined) return new JsonFault(fault)
      state.text += JSON.stringify(value)
      break
    }
    case "number":
      if (!Number.isFinite(value)) return new JsonFault(`${value} is not JSON`)
      state.text += JSON.stringify(value)
      break
    case "boolean":
      state.text += value ? "true" : "false"
      break
    case "object": {
      if (value === null) {
        state.text += "null"
        break
      }
      if (depth >= state.maxDepth) {
        return new JsonFault(
          state.ancestors.includes(value) ? "a circular reference is not JSON" : `nested deeper than ${state.maxDepth} levels`
        )
      }
      state.ancestors.push(value)
      const fault = Array.isArray(value) ? writeArray(state, value, depth) : writeObject(state, value, depth)
      state.ancestors.pop()
      if (fault !== undefined) return fault
      break
    }
    case "bigint":
      return new JsonFault("bigint is not JSON")
    case "undefined":
      return new JsonFault("undefined is not JSON")
    case "symbol":
      return new JsonFault("a symbol is not JSON")
    case "function":
      return new JsonFault("a function is not JSON")
  }
  return state.text.length + state.used > state.maxSize
    ? new JsonFault(`encoded JSON is longer than ${state.maxSize} characters`)
    : undefined
}

const writeArray = (state: State, array: ReadonlyArray<unknown>, depth: number): JsonFault | undefined => {
  if (Object.getPrototypeOf(array) !== Array.prototype) return new JsonFault(`${kindOf(array)} is not JSON`)
  state.text += "["
  for (let i = 0; i < array.length; i++) {
    if (i > 0) state.text += ","
    const fault = writeValue(state, array[i], depth + 1)
    if (fault !== undefined) {
      fault.segments.push(i)
      return fault
    }
  }
  state.text += "]"
  return undefined
}

const writeObject = (state: State, object: object, depth: number): JsonFault | undefined => {
  if (!isPlainObject(object)) return new JsonFault(`${kindOf(object)} is not JSON`)
  if (Object.getOwnPropertySymbols(object).length > 0) return new JsonFault("a symbol key is not JSON")
  const record = object
  const keys = sortedKeys(Object.keys(object))
  state.text += "{"
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!
    const keyFault = stringFault(key)
    if (keyFault !== undefined) {
      const fault = new JsonFault(`key ${keyFault}`)
      fault.segments.push(key)
      return fault
    }
    if (i > 0) state.text += ","
    state.text += JSON.stringify(key)
    state.text += ":"
    const item = record[key]
    const fault =
      typeof item === "function" && key === "toJSON"
        ? new JsonFault("a toJSON method is not JSON (it is never called: pass the JSON value itself)")
        : writeValue(state, item, depth + 1)
    if (fault !== undefined) {
      fault.segments.push(key)
      return fault
    }
  }
  state.text += "}"
  return undefined
}

/**
 * The precise (slower) pass: the text with keys in `jsonb` order, or the
 * first fault with its path.
 */
const diagnose = (value: unknown, maxDepth: number, maxSize: number, used: number): string | JsonFault => {
  const state: State = { text: "", maxDepth, maxSize, used, ancestors: [] }
  try {
    const fault = writeValue(state, value, 0)
    return fault ?? state.text
  } catch (error) {
    // A getter or a proxy trap that throws.
    return new JsonFault(`could not be read: ${error instanceof Error ? error.message : String(error)}`)
  }
}

/**
 * The fast pass: `true` when `value` is made of plain objects, arrays,
 * strings, finite numbers, booleans and null, within `maxDepth`, and a lower
 * bound of its text's length stays within `budget` (which also bounds the
 * walk over a shared sub-object referenced many times). Strings are checked
 * later, on the text.
 */
const spend = (budget: { left: number }, n: number): boolean => {
  budget.left -= n
  return budget.left >= 0
}

const plain = (value: unknown, depth: number, maxDepth: number, budget: { left: number }): boolean => {
  switch (typeof value) {
    case "string":
      return spend(budget, value.length + 2)
    case "number":
      return Number.isFinite(value) && spend(budget, 1)
    case "boolean":
      return spend(budget, 4)
    case "object": {
      if (value === null) return spend(budget, 4)
      if (depth >= maxDepth) return false
      if (Array.isArray(value)) {
        if (Object.getPrototypeOf(value) !== Array.prototype) return false
        budget.left -= 2
        for (let i = 0; i < value.length; i++) if (!plain(value[i], depth + 1, maxDepth, budget)) return false
        return budget.left >= 0
      }
      if (!isPlainObject(value) || Object.getOwnPropertySymbols(value).length > 0) return false
      budget.left -= 2
      const record = value
      for (const key in record) {
        budget.left -= key.length + 3
        if (!plain(record[key], depth + 1, maxDepth, budget)) return false
      }
      return budget.left >= 0
    }
    default:
      return false
  }
}

/**
 * The JSON text of `value`, or why it is not JSON that PostgreSQL stores
 * unchanged. `maxDepth` counts nested objects and arrays (the value itself
 * is depth 1); `maxSize` counts UTF-16 code units of the text plus `used`
 * (what was already spent on the same event). Never calls `toJSON`, and
 * recurses at most `maxDepth` deep.
 *
 * The common case is one cheap structural walk plus the native
 * `JSON.stringify`; NUL and lone surrogates are found on its text (it
 * escapes them as `\u0000` and `\udXXX`, and nothing else that JSON
 * stores raw). Anything suspicious takes the precise pass, which names the
 * path.
 */
export const encode = (value: unknown, maxDepth: number, maxSize: number, used = 0): string | JsonFault => {
  try {
    if (plain(value, 0, maxDepth, { left: maxSize - used })) {
      const text = JSON.stringify(value)
      if (text.length + used <= maxSize && !text.includes("\\u")) return text
    }
  } catch {
    // A getter or a proxy trap that throws: the precise pass names it.
  }
  return diagnose(value, maxDepth, maxSize, used)
}

/**
 * What PostgreSQL hands back for a `jsonb` value written as `text`:
 * `JSON.parse` with every object's keys in `jsonb`'s order (by UTF-8
 * length, then bytewise). Objects are rebuilt with `Object.fromEntries`, so
 * a `__proto__` key stays an own property.
 */
export const parseAsJsonb = (text: string): unknown =>
  JSON.parse(text, (_key, value: unknown) => {
    if (!isPlainObject(value)) return value
    const keys = Object.keys(value)
    for (let i = 1; i < keys.length; i++) {
      if (compareKeys(keys[i - 1]!, keys[i]!) > 0) {
        return Object.fromEntries(keys.sort(compareKeys).map((key) => [key, value[key]]))
      }
    }
    return value
  })

/**
 * A plain object: prototype `Object.prototype` or `null`, not an array.
 */
export const isPlainObject = (u: unknown): u is { readonly [key: string]: unknown } => {
  if (typeof u !== "object" || u === null || Array.isArray(u)) return false
  const proto: unknown = Object.getPrototypeOf(u)
  return proto === Object.prototype || proto === null
}

/**
 * Stored JSON objects, decoded without copying: every key (also `__proto__`,
 * `constructor`, `prototype`) stays the own property the JSON parser made,
 * and no prototype is ever set. (`Schema.Record` assigns keys onto a fresh
 * object, which turns a `__proto__` key into a prototype.)
 */
export const JsonObject: Schema.Schema<{ readonly [key: string]: unknown }> = Schema.declare(isPlainObject, {
  identifier: "JsonObject",
  description: "a JSON object"
})
