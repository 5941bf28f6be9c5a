/**
 * Builds the shard indexes of partitioned projections (issue 15), one build
 * at a time: in a process through a semaphore, across processes through a
 * claim row in `es_index_builds` (migration 0019; no advisory lock, which a
 * transaction-pooling PgBouncer would not keep). Two
 * `CREATE INDEX CONCURRENTLY` on `es_events` at once deadlock and leave an
 * invalid index, so a build runs only under its claim; every other store
 * polls (short statements, no snapshot held across the build) until the
 * index is valid or the claim is gone. An invalid leftover (an interrupted
 * build) is dropped concurrently and built again, once per store.
 */
import type * as PgClient from "@effect/sql-pg/PgClient"
import type { StoreError } from "@mire/core/EventStoreError"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as PgSchema from "../PgSchema.js"
import { refail } from "./errors.js"
import { decodeRows } from "./schema.js"

/** How long a claim holds without renewal (a crashed builder's claim expires), and how often it is renewed. */
const claimSeconds = 60
const renewEvery = "15 seconds"
/** How often a store waiting for another's build looks again. */
const lookEvery = "500 millis"

/**
 * What a store finds of an index: absent, valid, or invalid (`building`:
 * a `CREATE INDEX CONCURRENTLY` of it is in progress, in any session).
 */
export type IndexState = "absent" | "valid" | "building" | "invalid"

/**
 * What to do about an index in `state` once this store holds its claim:
 * nothing (`ready`), build it, drop an invalid leftover first, or wait for a
 * build that is still running (a session that built without a claim).
 */
export const decide = (state: IndexState): "ready" | "build" | "dropAndBuild" | "wait" =>
  state === "valid" ? "ready" : state === "absent" ? "build" : state === "invalid" ? "dropAndBuild" : "wait"

const decodeState = decodeRows(
  Schema.Struct({ valid: Schema.Boolean, building: Schema.Boolean }),
  "shardIndex"
)

const decodeClaimed = decodeRows(Schema.Struct({ claimed: Schema.Boolean }), "shardIndex")

/** An index to build: its name (unqualified) and columns. */
export interface IndexSpec {
  readonly name: string
  readonly columns: string
}

/**
 * A builder over one client: `ensure(spec)` returns once the index is valid
 * (or this store gave up on it, with a warning: the index only speeds polls
 * up). Builds run one at a time per builder.
 */
export const make = (sql: PgClient.PgClient, names: PgSchema.Names) =>
  Effect.gen(function* () {
    const builds = yield* Effect.makeSemaphore(1)
    // Unique per builder even under a test's seeded Random: it tells this builder's claim from another's.
    const claimant = yield* Effect.sync(() => `store-${crypto.randomUUID()}`)
    const claims = names.table("es_index_builds")
    // One claim per table: two builds on es_events deadlock whichever indexes they build.
    const relation = names.qualify("es_events")

    const stateOf = (qualified: string): Effect.Effect<IndexState, StoreError> =>
      sql`
        SELECT i.indisvalid AS valid,
               EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid) AS building
        FROM pg_index i WHERE i.indexrelid = to_regclass(${qualified})`.pipe(
        refail("shardIndex"),
        Effect.flatMap(decodeState),
        Effect.map((rows) => {
          const row = rows[0]
          return row === undefined ? "absent" : row.valid ? "valid" : row.building ? "building" : "invalid"
        })
      )

    const claim =
      sql`
        INSERT INTO ${claims} AS c (relation, claimed_by, claimed_until)
        VALUES (${relation}, ${claimant}, now() + make_interval(secs => ${claimSeconds}))
        ON CONFLICT (relation) DO UPDATE SET claimed_by = excluded.claimed_by, claimed_until = excluded.claimed_until
          WHERE c.claimed_until <= now()
        RETURNING true AS claimed`.pipe(
        refail("shardIndex"),
        Effect.flatMap(decodeClaimed),
        Effect.map((rows) => rows.length > 0)
      )

    const renew =
      sql`
        UPDATE ${claims} SET claimed_until = now() + make_interval(secs => ${claimSeconds})
        WHERE relation = ${relation} AND claimed_by = ${claimant}`.pipe(refail("shardIndex"), Effect.asVoid)

    const release =
      sql`DELETE FROM ${claims} WHERE relation = ${relation} AND claimed_by = ${claimant}`.pipe(refail("shardIndex"), Effect.asVoid)

    const create = (spec: IndexSpec) =>
      sql
        .unsafe(`CREATE INDEX CONCURRENTLY IF NOT EXISTS ${spec.name} ON ${names.qualify("es_events")} (${spec.columns})`)
        .pipe(refail("shardIndex"), Effect.asVoid)

    const drop = (qualified: string) =>
      sql.unsafe(`DROP INDEX CONCURRENTLY IF EXISTS ${qualified}`).pipe(refail("shardIndex"), Effect.asVoid)

    /** Under the claim (renewed meanwhile): build, dropping an invalid leftover first, at most twice. */
    const buildClaimed = (spec: IndexSpec, qualified: string) =>
      Effect.gen(function* () {
        yield* Effect.forkScoped(Effect.schedule(Effect.ignore(renew), Schedule.spaced(renewEvery)))
        for (let attempt = 0; attempt < 2; attempt++) {
          const state = yield* stateOf(qualified)
          const step = decide(state)
          if (step === "ready" || step === "wait") return state
          if (step === "dropAndBuild") yield* drop(qualified)
          yield* create(spec)
        }
        return yield* stateOf(qualified)
      }).pipe(Effect.scoped, Effect.ensuring(Effect.ignore(release)))

    /** One look: valid, or claimed and built here, or someone else is at it (none: look again). */
    const look = (spec: IndexSpec, qualified: string): Effect.Effect<IndexState | undefined, StoreError> =>
      Effect.flatMap(stateOf(qualified), (state) => {
        if (state === "valid") return Effect.succeed(state)
        return Effect.flatMap(claim, (claimed) =>
          claimed
            ? Effect.map(buildClaimed(spec, qualified), (after) => (after === "building" ? undefined : after))
            : Effect.succeed(undefined)
        )
      })

    return (spec: IndexSpec): Effect.Effect<void> => {
      const qualified = names.qualify(spec.name)
      return builds.withPermits(1)(
        look(spec, qualified).pipe(
          Effect.repeat(Schedule.spaced(lookEvery).pipe(Schedule.whileInput((state) => state === undefined), Schedule.passthrough)),
          Effect.flatMap((state) =>
            state === "valid"
              ? Effect.void
              : Effect.logWarning(
                  `index ${qualified} is not valid after a rebuild: shards poll without it until \`REINDEX INDEX CONCURRENTLY ${qualified}\``
                )
          ),
          Effect.catchAll((error) => Effect.logWarning(`could not build index ${qualified}; shards poll without it`, error))
        )
      )
    }
  })
