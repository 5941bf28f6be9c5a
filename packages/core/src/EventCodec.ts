/**
 * The one path between typed events and stored rows, used by every reader
 * and writer: loads, snapshots, subscriptions, projections and sagas.
 *
 * An aggregate's events are a `Schema.Union` of `Schema.TaggedStruct`s. Each
 * is stored under a stable `event_type` (by default
 * `<category>.<tag in kebab-case>`) with a schema version. Data is stored
 * without its `_tag`, so renaming a tag only needs the old `type` kept.
 * Older versions are upcast to the current shape on read; writers always
 * write the current version.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as SchemaAST from "effect/SchemaAST"
import { EventDecodeError, InvalidInput } from "./EventStoreError.js"
import type { JsonObject, NewEvent, RecordedEvent } from "./RecordedEvent.js"

/**
 * One upcasting step, from version `n` to `n + 1` of an event's stored data:
 * a pure function, or a Schema whose decode turns the old encoded shape into
 * the new encoded shape.
 *
 * @since 0.1.0
 * @category models
 */
export type Upcaster = ((data: JsonObject) => JsonObject) | Schema.Schema.AnyNoContext

/**
 * How one event (by tag) is stored and evolved.
 *
 * @example
 * ```ts
 * import type { EventCodec } from "@mire/core"
 *
 * // Deposits are stored as `account.deposited` at version 2; version-1 data gets a currency, and
 * // events once stored as `account.money-added` are read as deposits.
 * const deposited: EventCodec.EventDefinition = {
 *   type: "account.deposited",
 *   version: 2,
 *   upcasters: [(v1) => ({ ...v1, currency: "EUR" })],
 *   formerTypes: ["account.money-added"]
 * }
 * ```
 * @since 0.1.0
 * @category models
 */
export interface EventDefinition {
  /** The stored `event_type`; defaults to `<category>.<kebab-tag>`. */
  readonly type?: string
  /** Stored types that older code wrote for this event (renames). */
  readonly formerTypes?: ReadonlyArray<string>
  /** The current schema version (default 1). */
  readonly version?: number
  /** `upcasters[i]` turns version `i + 1` into version `i + 2`. */
  readonly upcasters?: ReadonlyArray<Upcaster>
}

/**
 * Any tagged struct schema: the members of an event union.
 *
 * @since 0.1.0
 * @category models
 */
export type TaggedMember = Schema.Schema.AnyNoContext & { readonly fields: { readonly _tag: unknown } }

/**
 * A union of tagged structs: an aggregate's events.
 *
 * @since 0.1.0
 * @category models
 */
export type EventUnion = Schema.Union<ReadonlyArray<TaggedMember>> | TaggedMember

/**
 * What decoding reads of a stored event: its type, version and data, and
 * where it is stored (named in a decode error). A `RecordedEvent` is one; so
 * is a saga's stored start event, without being a fake recorded event.
 *
 * @since 0.1.0
 * @category models
 */
export interface Decodable extends Pick<RecordedEvent, "streamVersion" | "globalPosition" | "eventType" | "schemaVersion" | "data"> {
  /** Any stream id: decoding only names it in errors, so an input need not carry the `StreamId` brand. */
  readonly streamId: string
}

/**
 * The codec for one event union.
 *
 * @since 0.1.0
 * @category models
 */
export interface EventCodec<E> {
  /** The category the default type names derive from. */
  readonly category: string
  readonly schema: Schema.Schema<E, unknown>
  /** Stored type of each tag. */
  readonly types: ReadonlyMap<string, { readonly type: string; readonly version: number }>
  /** Every stored type (current and former) this codec decodes. */
  readonly knownTypes: ReadonlyArray<string>
  /** The tag each stored type (current and former) decodes to. */
  readonly tagOf: ReadonlyMap<string, string>
  /** Encodes a typed event; an event failing its Schema is `InvalidInput`. */
  readonly encode: (event: E) => Effect.Effect<NewEvent, InvalidInput>
  /** Encodes many events in one synchronous pass (the save path). */
  readonly encodeAll: (events: ReadonlyArray<E>) => Effect.Effect<ReadonlyArray<NewEvent>, InvalidInput>
  /** Upcasts and decodes a stored event. */
  readonly decode: (recorded: Decodable) => Effect.Effect<E, EventDecodeError>
  /** {@link decode} as one synchronous call (a load's fold decodes every event with it). */
  readonly decodeEither: (recorded: Decodable) => Either.Either<E, EventDecodeError>
  /** Does this codec know a stored type? */
  readonly handles: (eventType: string) => boolean
}

/**
 * `MoneyDeposited` → `money-deposited`.
 *
 * @since 0.1.0
 */
export const kebabCase = (tag: string): string =>
  tag
    .replace(/([a-z0-9])([A-Z])/g, "$1-$2")
    .replace(/([A-Z])([A-Z][a-z])/g, "$1-$2")
    .replace(/[_\s]+/g, "-")
    .toLowerCase()

const tagOf = (member: Schema.Schema.AnyNoContext): string => {
  for (const property of SchemaAST.getPropertySignatures(member.ast)) {
    if (property.name === "_tag" && SchemaAST.isLiteral(property.type) && typeof property.type.literal === "string") {
      return property.type.literal
    }
  }
  return String(member.ast)
}

const membersOf = (events: EventUnion): ReadonlyArray<Schema.Schema.AnyNoContext> =>
  "members" in events ? events.members : [events]

interface Entry {
  readonly tag: string
  readonly version: number
  /** `upcasters[i]` as a synchronous step from version `i + 1` to `i + 2`: the new data, or why not. */
  readonly upcasters: ReadonlyArray<(data: JsonObject) => Either.Either<JsonObject, string>>
  readonly decode: (u: unknown) => Either.Either<unknown, ParseResult.ParseError>
  /** A plain check-and-copy of the member's data (with `_tag` set), when its shape allows one. */
  readonly fast: FastDecode | undefined
}

/** What a {@link FastDecode} returns for a value it does not accept: the Schema decode then decides. */
const noMatch: unique symbol = Symbol("noMatch")

/** A decoder compiled from a Schema's AST: the decoded value (a copy, as the Schema makes), or `noMatch`. */
type FastDecode = (u: unknown) => unknown

/**
 * Compiles the shapes most events have (structs of strings, numbers, booleans, literals, refinements
 * of them and nested such structs, every field required) into a plain function that checks and copies
 * exactly as the Schema decode does, without its per-field `Either`s. Anything else is `undefined`,
 * and a value the compiled check refuses goes to the Schema decode, so results and errors are the
 * Schema's own.
 */
const compileFast = (ast: SchemaAST.AST, tag?: string): FastDecode | undefined => {
  // An annotation can change how the Schema parses (excess properties, errors): leave that to it.
  if (Option.isSome(SchemaAST.getParseOptionsAnnotation(ast))) return undefined
  switch (ast._tag) {
    case "StringKeyword":
      return (u) => (typeof u === "string" ? u : noMatch)
    case "NumberKeyword":
      return (u) => (typeof u === "number" ? u : noMatch)
    case "BooleanKeyword":
      return (u) => (typeof u === "boolean" ? u : noMatch)
    case "Literal": {
      const literal = ast.literal
      return (u) => (u === literal ? u : noMatch)
    }
    case "Union": {
      // Only a union of literals (`Schema.Literal("a", "b")`): the Schema returns the value itself.
      const literals: Array<SchemaAST.LiteralValue> = []
      for (const member of ast.types) {
        if (!SchemaAST.isLiteral(member) || Option.isSome(SchemaAST.getParseOptionsAnnotation(member))) return undefined
        literals.push(member.literal)
      }
      return (u) => (literals.some((literal) => literal === u) ? u : noMatch)
    }
    case "Refinement": {
      const from = compileFast(ast.from)
      if (from === undefined) return undefined
      return (u) => {
        const a = from(u)
        return a !== noMatch && Option.isNone(ast.filter(a, SchemaAST.defaultParseOption, ast)) ? a : noMatch
      }
    }
    case "TypeLiteral":
      return compileStruct(ast, tag)
    default:
      return undefined
  }
}

/**
 * A struct's {@link FastDecode}. With `tag`, the `_tag` field is not read from the value but set to
 * `tag` (the member decodes stored data, which has no `_tag`, as `{ ...data, _tag: tag }`).
 */
const compileStruct = (ast: SchemaAST.TypeLiteral, tag: string | undefined): FastDecode | undefined => {
  if (ast.indexSignatures.length > 0 || ast.propertySignatures.length === 0) return undefined
  const names: Array<string> = []
  const fields: Array<FastDecode> = []
  let tagIndex = -1
  for (const signature of ast.propertySignatures) {
    const name = signature.name
    // `out[name] = …` must define an own property: `__proto__` would set the prototype instead.
    if (typeof name !== "string" || name === "__proto__" || signature.isOptional) return undefined
    const field = compileFast(signature.type)
    if (field === undefined) return undefined
    if (tag !== undefined && name === "_tag") {
      // The tag is set, not read: its literal must be the tag, or the Schema would refuse it.
      if (field(tag) === noMatch) return undefined
      tagIndex = names.length
    }
    names.push(name)
    fields.push(field)
  }
  if (tag !== undefined && tagIndex < 0) return undefined
  const count = names.length
  return (u) => {
    // The Schema's own test for a struct's input: an object, not null, not an array.
    if (!Predicate.isRecord(u)) return noMatch
    const input = u
    const out: { [key: string]: unknown } = {}
    for (let i = 0; i < count; i++) {
      const name = names[i]!
      if (i === tagIndex) {
        out[name] = tag
        continue
      }
      if (!Object.hasOwn(input, name)) return noMatch
      const value = fields[i]!(input[name])
      if (value === noMatch) return noMatch
      out[name] = value
    }
    return out
  }
}

const isObject = (u: unknown): u is JsonObject => typeof u === "object" && u !== null && !Array.isArray(u)

const upcastStep = (step: Upcaster): ((data: JsonObject) => Either.Either<JsonObject, string>) => {
  if (Schema.isSchema(step)) {
    const decode = Schema.decodeUnknownEither(step)
    return (data) =>
      Either.match(decode(data), {
        onLeft: (e) => Either.left(ParseResult.TreeFormatter.formatErrorSync(e)),
        onRight: (out) => (isObject(out) ? Either.right(out) : Either.left("upcaster did not produce an object"))
      })
  }
  return (data) => {
    try {
      return Either.right(step(data))
    } catch (e) {
      return Either.left(`upcaster threw: ${String(e)}`)
    }
  }
}

/**
 * Builds the codec of an event union.
 *
 * @example
 * ```ts
 * import { EventCodec } from "@mire/core"
 * import { Schema } from "effect"
 *
 * const MoneyDeposited = Schema.TaggedStruct("MoneyDeposited", { amount: Schema.Number, currency: Schema.String })
 * const AccountEvent = Schema.Union(MoneyDeposited)
 *
 * // Version 1 had no currency: stored version-1 events are read as euros.
 * const codec = EventCodec.make("account", AccountEvent, {
 *   MoneyDeposited: { version: 2, upcasters: [(v1) => ({ ...v1, currency: "EUR" })] }
 * })
 * assert.strictEqual(codec.types.get("MoneyDeposited")?.type, "account.money-deposited")
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const make = <U extends EventUnion>(
  category: string,
  events: U,
  definitions: { readonly [tag: string]: EventDefinition } = {}
): EventCodec<Schema.Schema.Type<U>> => {
  type E = Schema.Schema.Type<U>
  const byType = new Map<string, Entry>()
  const types = new Map<string, { type: string; version: number }>()
  for (const member of membersOf(events)) {
    const tag = tagOf(member)
    const definition = definitions[tag] ?? {}
    const type = definition.type ?? `${category}.${kebabCase(tag)}`
    const version = definition.version ?? 1
    const entry: Entry = {
      tag,
      version,
      upcasters: (definition.upcasters ?? []).map(upcastStep),
      decode: Schema.decodeUnknownEither(member),
      fast: compileFast(member.ast, tag)
    }
    types.set(tag, { type, version })
    byType.set(type, entry)
    for (const former of definition.formerTypes ?? []) byType.set(former, entry)
  }

  const encodeSync = Schema.encodeUnknownEither(events as Schema.Schema<E, unknown>)
  const encodeOne = (event: E): NewEvent | InvalidInput => {
    const result = encodeSync(event)
    if (Either.isLeft(result)) {
      return new InvalidInput({ field: "event", reason: ParseResult.TreeFormatter.formatErrorSync(result.left) })
    }
    const { _tag, ...data } = result.right as { readonly _tag: string } & JsonObject
    const info = types.get(_tag)
    return info === undefined
      ? new InvalidInput({ field: "event", reason: `unknown event tag ${_tag}` })
      : { eventType: info.type, schemaVersion: info.version, data }
  }

  const encode = (event: E): Effect.Effect<NewEvent, InvalidInput> =>
    Effect.suspend(() => {
      const encoded = encodeOne(event)
      return encoded instanceof InvalidInput ? Effect.fail(encoded) : Effect.succeed(encoded)
    })

  const encodeAll = (all: ReadonlyArray<E>): Effect.Effect<ReadonlyArray<NewEvent>, InvalidInput> =>
    Effect.suspend(() => {
      const out: Array<NewEvent> = []
      for (const event of all) {
        const encoded = encodeOne(event)
        if (encoded instanceof InvalidInput) return Effect.fail(encoded)
        out.push(encoded)
      }
      return Effect.succeed(out)
    })

  // No closure per call: a load decodes every event through here.
  const fail = (recorded: Decodable, issue: string): Either.Either<never, EventDecodeError> =>
    Either.left(
      new EventDecodeError({
        streamId: recorded.streamId,
        streamVersion: recorded.streamVersion,
        globalPosition: recorded.globalPosition,
        eventType: recorded.eventType,
        schemaVersion: recorded.schemaVersion,
        issue
      })
    )

  const decodeEither = (recorded: Decodable): Either.Either<E, EventDecodeError> => {
    const entry = byType.get(recorded.eventType)
    if (entry === undefined) return fail(recorded, "unknown event type")
    if (!Number.isInteger(recorded.schemaVersion) || recorded.schemaVersion < 1) {
      return fail(recorded, `invalid schema version ${recorded.schemaVersion}`)
    }
    if (recorded.schemaVersion > entry.version) {
      return fail(recorded, `schema version ${recorded.schemaVersion} is newer than this code knows (${entry.version})`)
    }
    if (recorded.schemaVersion < entry.version && entry.upcasters.length < entry.version - 1) {
      return fail(recorded, `no upcaster chain from version ${recorded.schemaVersion} to ${entry.version}`)
    }
    let data = recorded.data
    for (let v = recorded.schemaVersion; v < entry.version; v++) {
      const next = entry.upcasters[v - 1]!(data)
      if (Either.isLeft(next)) return fail(recorded, next.left)
      data = next.right
    }
    if (entry.fast !== undefined) {
      const out = entry.fast(data)
      if (out !== noMatch) return Either.right(out as E)
    }
    const decoded = entry.decode({ ...data, _tag: entry.tag })
    return Either.isLeft(decoded)
      ? fail(recorded, ParseResult.TreeFormatter.formatErrorSync(decoded.left))
      : Either.right(decoded.right as E)
  }

  const decode = (recorded: Decodable): Effect.Effect<E, EventDecodeError> =>
    Effect.suspend(() => decodeEither(recorded))

  return {
    category,
    schema: events as Schema.Schema<E, unknown>,
    types,
    knownTypes: [...byType.keys()],
    tagOf: new Map([...byType].map(([type, entry]) => [type, entry.tag])),
    encode,
    encodeAll,
    decode,
    decodeEither,
    handles: (eventType) => byType.has(eventType)
  }
}
