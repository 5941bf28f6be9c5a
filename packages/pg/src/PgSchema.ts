/**
 * The PostgreSQL schema mire's tables, functions and notification channels
 * live in (default `public`), so two applications or tenants can share one
 * database. Every Postgres store reads it from this reference when its layer
 * builds; provide {@link layer} to choose another.
 *
 * @since 0.2.0
 */
import * as Statement from "@effect/sql/Statement"
import { InvalidInput } from "@mire/core/EventStoreError"
import * as Context from "effect/Context"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"

/**
 * The qualified names of one schema's objects. The fragments go into `sql`
 * templates (`sql\`SELECT … FROM ${names.events}\``); `qualify` gives the
 * same text for `sql.unsafe`. A schema name is checked once, by {@link make},
 * so nothing a user typed reaches SQL unchecked.
 *
 * @since 0.2.0
 * @category models
 */
export interface Names {
  /** The schema's name, as given. */
  readonly schema: string
  /** `"<schema>"`: the quoted schema, for DDL and `search_path`. */
  readonly quoted: string
  /** `"<schema>".<name>` as text, for `sql.unsafe` statements. */
  readonly qualify: (name: string) => string
  /** `"<schema>".<name>` as a fragment, for any mire table or function not listed below. */
  readonly table: (name: string) => Statement.Fragment
  readonly events: Statement.Fragment
  readonly streams: Statement.Fragment
  readonly snapshots: Statement.Fragment
  readonly subscriptions: Statement.Fragment
  readonly sagaInstances: Statement.Fragment
  readonly sagaHistory: Statement.Fragment
  readonly outbox: Statement.Fragment
  readonly migrations: Statement.Fragment
  /** The channel appends notify (payload: the category). `mire_events` in `public`, `<schema>.mire_events` elsewhere. */
  readonly eventsChannel: string
  /** The channel saga workers are notified on. `mire_sagas` in `public`, `<schema>.mire_sagas` elsewhere. */
  readonly sagasChannel: string
}

/**
 * What a schema name may be: a lower-case unquoted PostgreSQL identifier
 * (letters, digits, `_`; not starting with a digit; at most 48 bytes, so
 * `<schema>.mire_events` fits a channel name's 63).
 *
 * @since 0.2.0
 * @category validation
 */
export const pattern = /^[a-z_][a-z0-9_]{0,47}$/

/**
 * The names of `schema`'s objects, or `InvalidInput` when `schema` is not a
 * name mire accepts ({@link pattern}; `pg_*` is reserved by PostgreSQL).
 *
 * @example
 * ```ts
 * import { PgSchema } from "@mire/pg"
 * import { Either } from "effect"
 *
 * const names = PgSchema.make("tenant_a")
 * assert.strictEqual(Either.getOrThrow(names).qualify("es_events"), '"tenant_a".es_events')
 * assert.ok(Either.isLeft(PgSchema.make("Robert'); DROP TABLE es_events")))
 * ```
 * @since 0.2.0
 * @category constructors
 */
export const make = (schema: string): Either.Either<Names, InvalidInput> => {
  if (!pattern.test(schema) || schema.startsWith("pg_")) {
    return Either.left(
      new InvalidInput({
        field: "schema",
        reason: `${JSON.stringify(schema)} is not a schema name mire accepts (lower-case letters, digits and _, not starting with a digit or pg_, at most 48 characters)`
      })
    )
  }
  return Either.right(namesOf(schema))
}

/** The names of a schema already checked against {@link pattern}. */
const namesOf = (schema: string): Names => {
  const quoted = `"${schema}"`
  const qualify = (name: string) => `${quoted}.${name}`
  const table = (name: string) => Statement.unsafeFragment(qualify(name))
  const channel = (name: string) => (schema === "public" ? name : `${schema}.${name}`)
  return {
    schema,
    quoted,
    qualify,
    table,
    events: table("es_events"),
    streams: table("es_streams"),
    snapshots: table("es_snapshots"),
    subscriptions: table("es_subscriptions"),
    sagaInstances: table("es_saga_instances"),
    sagaHistory: table("es_saga_history"),
    outbox: table("es_outbox"),
    migrations: table("es_migrations"),
    eventsChannel: channel("mire_events"),
    sagasChannel: channel("mire_sagas")
  }
}

/**
 * The names of the default schema, `public`.
 *
 * @since 0.2.0
 * @category constants
 */
export const defaultNames: Names = namesOf("public")

/**
 * The schema every Postgres store of mire uses; `public` unless a layer
 * provides another ({@link layer}).
 *
 * @since 0.2.0
 * @category tags
 */
export class PgSchema extends Context.Reference<PgSchema>()("@mire/pg/PgSchema", {
  defaultValue: (): Names => defaultNames
}) {}

/**
 * Puts mire's objects in `schema` for the stores built under this layer
 * (and for `PgMigrations`, which creates the schema). A name mire does not
 * accept fails the layer with `InvalidInput`.
 *
 * @example
 * ```ts
 * import { PgClient } from "@effect/sql-pg"
 * import { EventStore } from "@mire/core"
 * import { PgSchema, PgStore } from "@mire/pg"
 * import { Effect, Layer, Redacted } from "effect"
 *
 * const TenantA = PgStore.layer.pipe(
 *   Layer.provide(PgSchema.layer("tenant_a")),
 *   Layer.provide(PgClient.layer({ url: Redacted.make("postgres://localhost/app") }))
 * )
 * const program = EventStore.streamVersion("account-42").pipe(Effect.provide(TenantA))
 * ```
 * @since 0.2.0
 * @category layers
 */
export const layer = (schema: string): Layer.Layer<PgSchema, InvalidInput> =>
  Either.match(make(schema), {
    onLeft: Layer.fail,
    onRight: (names) => Layer.succeed(PgSchema, names)
  })
