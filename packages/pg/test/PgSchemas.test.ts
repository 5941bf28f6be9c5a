/**
 * Two schemas side by side in one database: each migrated on its own, with
 * its own tables, functions and channels, and nothing of one (events,
 * checkpoints, leases, sagas, outbox, wake-ups, status) ever showing in the
 * other. Wake-ups are asserted through the order of the wake-up streams,
 * never through a quiet period.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { assert, describe, layer } from "@effect/vitest"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as LeaseStore from "@mire/core/LeaseStore"
import * as SagaStore from "@mire/core/SagaStore"
import * as Subscription from "@mire/core/Subscription"
import * as SubscriptionStore from "@mire/core/SubscriptionStore"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import pg from "pg"
import * as PgMigrations from "../src/PgMigrations.js"
import * as PgSchema from "../src/PgSchema.js"
import * as PgStatus from "../src/PgStatus.js"
import * as PgStore from "../src/PgStore.js"
import { clientLayer, database, TestDatabase } from "./utils.js"

const A = "tenant_a"
const B = "tenant_b"

const inSchema =
  (schema: string) =>
  <X, E, R>(effect: Effect.Effect<X, E, R>) =>
    Effect.provide(effect, PgSchema.layer(schema))

/** Both schemas migrated (idempotent: each test can run first). */
const migrated = Effect.all([inSchema(A)(PgMigrations.migrate()), inSchema(B)(PgMigrations.migrate())]).pipe(Effect.orDie)

const event = (eventType: string, data: Record<string, number> = {}) => ({ eventType, schemaVersion: 1, data })

/** Retries `check` until it holds, for at most `deadline` of real time. */
const eventually = <X>(check: Effect.Effect<X, unknown>, deadline: Duration.DurationInput = "20 seconds") =>
  check.pipe(Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo(deadline))), Effect.orDie)

/** The next payload of `queue` that `skip` does not drop, within `deadline`. */
const nextPayload = (queue: Queue.Queue<string>, skip: (payload: string) => boolean, deadline: Duration.DurationInput = "10 seconds") =>
  Queue.take(queue).pipe(
    Effect.repeat({ until: (payload) => !skip(payload) }),
    Effect.timeoutFail({ duration: deadline, onTimeout: () => new Error("no wake-up in time") }),
    Effect.orDie
  )

/** Copies the non-empty payloads of `wakeups` (the reconnect wake is `""`) into a queue, in the current scope. */
const collect = <E>(wakeups: Stream.Stream<string, E>) =>
  Effect.gen(function* () {
    const queue = yield* Queue.unbounded<string>()
    yield* wakeups.pipe(
      Stream.filter((payload) => payload !== ""),
      Stream.runForEach((payload) => Queue.offer(queue, payload)),
      Effect.forkScoped
    )
    return queue
  })

describe("two schemas in one database", () => {
  layer(clientLayer().pipe(Layer.provideMerge(database)), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.effect("each schema is migrated on its own: its tables, tracking table and pinned functions; public stays empty", () =>
      Effect.gen(function* () {
        const sql = yield* PgClient.PgClient
        const all = (yield* PgMigrations.load).map((m) => m.name)
        assert.deepStrictEqual(yield* inSchema(A)(PgMigrations.migrate()), all)
        assert.deepStrictEqual(yield* inSchema(A)(PgMigrations.pending), [])
        assert.deepStrictEqual(
          (yield* inSchema(B)(PgMigrations.pending)).map((m) => m.name),
          all
        )
        assert.deepStrictEqual(yield* inSchema(B)(PgMigrations.migrate()), all)
        assert.deepStrictEqual(yield* inSchema(B)(PgMigrations.migrate()), [])
        const [where] = yield* sql<{ a: string | null; b: string | null; pub: string | null; pubMigrations: string | null }>`
          SELECT to_regclass('tenant_a.es_events')::text AS a, to_regclass('tenant_b.es_events')::text AS b,
                 to_regclass('public.es_events')::text AS pub, to_regclass('public.es_migrations')::text AS "pubMigrations"`
        assert.deepStrictEqual(where, { a: "tenant_a.es_events", b: "tenant_b.es_events", pub: null, pubMigrations: null })
        const [counts] = yield* sql<{ a: number; b: number }>`
          SELECT (SELECT count(*) FROM tenant_a.es_migrations)::int AS a, (SELECT count(*) FROM tenant_b.es_migrations)::int AS b`
        assert.deepStrictEqual(counts, { a: all.length, b: all.length })
        // Every function of each schema (a later migration's too) finds its own schema's tables. An
        // IMMUTABLE one reads no table, and a SET clause would keep the planner from inlining it.
        const functions = yield* sql<{ schema: string; name: string; config: ReadonlyArray<string> | null; immutable: boolean }>`
          SELECT n.nspname AS schema, p.proname AS name, p.proconfig AS config, p.provolatile = 'i' AS immutable
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname IN ('tenant_a', 'tenant_b') ORDER BY 1, 2`
        assert.isAtLeast(functions.filter((f) => f.schema === A).length, 3)
        assert.strictEqual(functions.filter((f) => f.schema === A).length, functions.filter((f) => f.schema === B).length)
        for (const f of functions.filter((f) => !f.immutable)) {
          assert.include(f.config ?? [], `search_path=${f.schema}`, `${f.schema}.${f.name} is not pinned to its schema`)
        }
      }))

    it.scoped("each schema has its own migration lock: a held one stops only its own schema", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        // Another replica holds public's migration lock (the key every release takes for public).
        const holder = new pg.Client({ connectionString: url })
        yield* Effect.acquireRelease(
          Effect.promise(async () => {
            await holder.connect()
            await holder.query("BEGIN; SELECT pg_advisory_xact_lock(hashtext('mire.migrations'))")
          }),
          () => Effect.promise(() => holder.end().catch(() => undefined))
        )
        const blocked = yield* Effect.flip(PgMigrations.migrate({ lockTimeout: "300 millis" }))
        assert.strictEqual(blocked.reason, "lock-timeout")
        const applied = yield* inSchema("tenant_c")(PgMigrations.migrate({ lockTimeout: "5 seconds" }))
        assert.strictEqual(applied[0], "0001_events")
      }))

    it.effect("a schema's function writes its own tables whatever the caller's search_path", () =>
      Effect.gen(function* () {
        yield* migrated
        const sql = yield* PgClient.PgClient
        yield* sql.withTransaction(
          Effect.gen(function* () {
            yield* sql.unsafe("SET LOCAL search_path TO tenant_a")
            yield* sql.unsafe(`SELECT * FROM "tenant_b".mire_append_stream('pinned-1', 'pinned', 'none', 0,
              ARRAY[gen_random_uuid()], ARRAY['pinned.e'], ARRAY[1], ARRAY['{}'::jsonb], ARRAY['{}'::jsonb])`)
          })
        )
        const [rows] = yield* sql<{ a: number; b: number }>`
          SELECT (SELECT count(*) FROM tenant_a.es_events WHERE stream_id = 'pinned-1')::int AS a,
                 (SELECT count(*) FROM tenant_b.es_events WHERE stream_id = 'pinned-1')::int AS b`
        assert.deepStrictEqual(rows, { a: 0, b: 1 })
      }))

    it.effect("migrating public refuses when the search_path finds mire installed in another schema", () =>
      Effect.gen(function* () {
        yield* migrated
        const sql = yield* PgClient.PgClient
        // A release before schemas created its tables in the first schema of the session's path.
        const refusals = yield* sql.withTransaction(
          Effect.gen(function* () {
            yield* sql.unsafe("SET LOCAL search_path TO tenant_a, public")
            return [yield* Effect.flip(PgMigrations.pending), yield* Effect.flip(PgMigrations.migrate())]
          })
        )
        for (const refusal of refusals) {
          assert.strictEqual(refusal._tag, "MigrationError")
          assert.include(refusal.message, 'mire is installed in schema "tenant_a"')
          assert.include(refusal.message, 'PgSchema.layer("tenant_a")')
        }
        const [rows] = yield* sql<{ pub: string | null }>`SELECT to_regclass('public.es_migrations')::text AS pub`
        assert.isNull(rows!.pub)
        // Named explicitly, a schema is not second-guessed.
        assert.deepStrictEqual(
          yield* sql.withTransaction(
            Effect.zipRight(sql.unsafe("SET LOCAL search_path TO tenant_a, public"), inSchema(B)(PgMigrations.pending))
          ),
          []
        )
      }))

    it.effect("appends, reads and conflicts of one schema never show in the other", () =>
      Effect.gen(function* () {
        yield* migrated
        const inA = <X, E, R>(effect: Effect.Effect<X, E, R>) => Effect.provide(effect, PgStore.layerSchema(A))
        const inB = <X, E, R>(effect: Effect.Effect<X, E, R>) => Effect.provide(effect, PgStore.layerSchema(B))
        const first = yield* inA(EventStore.append("acct-1", "acct", ExpectedVersion.NoStream, [event("a.one"), event("a.two")]))
        // The same stream id starts afresh in the other schema: its own versions, its own positions.
        const other = yield* inB(EventStore.append("acct-1", "acct", ExpectedVersion.NoStream, [event("b.one")]))
        assert.strictEqual(first.lastVersion, 2)
        assert.strictEqual(other.lastVersion, 1)
        assert.strictEqual(yield* inA(EventStore.streamVersion("acct-1")), 2)
        assert.strictEqual(yield* inB(EventStore.streamVersion("acct-1")), 1)
        const conflict = yield* inB(
          Effect.flip(EventStore.append("acct-1", "acct", ExpectedVersion.Exact(2), [event("b.two")]))
        )
        assert.strictEqual(conflict._tag, "ConcurrencyConflict")
        const logA = yield* inA(Stream.runCollect(EventStore.readAll()))
        const logB = yield* inB(Stream.runCollect(EventStore.readAll()))
        assert.deepStrictEqual(
          [...logA].map((e) => e.eventType),
          ["a.one", "a.two"]
        )
        assert.isTrue([...logB].every((e) => !e.eventType.startsWith("a.")))
        assert.include(
          [...logB].map((e) => e.eventType),
          "b.one"
        )
      }))

    it.scoped("checkpoints, leases, sagas, the outbox and status of one schema never show in the other", () =>
      Effect.gen(function* () {
        yield* migrated
        const storeA = yield* Layer.build(PgStore.layerSchema(A))
        const storeB = yield* Layer.build(PgStore.layerSchema(B))
        const inA = <X, E, R>(effect: Effect.Effect<X, E, R>) => Effect.provide(effect, storeA)
        const inB = <X, E, R>(effect: Effect.Effect<X, E, R>) => Effect.provide(effect, storeB)
        yield* inA(EventStore.append("proj-src-1", "projsrc", ExpectedVersion.Any, [event("a.proj")]))
        yield* inB(EventStore.append("proj-src-1", "projsrc", ExpectedVersion.Any, [event("b.proj")]))

        // A subscription in A reads A's events only, and its checkpoint is A's.
        const subscription = yield* inA(Subscription.make({ subscriptionId: "proj-1", categories: ["projsrc"] }))
        const delivered = yield* eventually(
          Effect.filterOrFail(inA(subscription.poll), (events) => events.length > 0)
        )
        assert.deepStrictEqual(
          delivered.map((e) => e.eventType),
          ["a.proj"]
        )
        assert.isTrue(yield* inA(subscription.checkpoint()))
        assert.isTrue(Option.isSome(yield* inA(Effect.flatMap(SubscriptionStore.SubscriptionStore, (s) => s.readCheckpoint("proj-1")))))
        assert.isTrue(Option.isNone(yield* inB(Effect.flatMap(SubscriptionStore.SubscriptionStore, (s) => s.readCheckpoint("proj-1")))))

        // The same lease is free in each schema.
        const leaseA = yield* inA(Effect.flatMap(LeaseStore.LeaseStore, (s) => s.acquire("lease-1", "worker-a", Duration.minutes(1))))
        const leaseB = yield* inB(Effect.flatMap(LeaseStore.LeaseStore, (s) => s.acquire("lease-1", "worker-b", Duration.minutes(1))))
        assert.strictEqual(Option.getOrThrow(leaseA).workerId, "worker-a")
        assert.strictEqual(Option.getOrThrow(leaseB).workerId, "worker-b")
        assert.strictEqual(Option.getOrThrow(leaseB).fenceToken, 1n)

        // Sagas and the outbox.
        const now = new Date()
        yield* inA(
          Effect.flatMap(SagaStore.SagaStore, (s) =>
            s.insert({
              sagaName: "transfer",
              instanceId: "t-1",
              correlationId: "corr-t-1",
              status: "running",
              stepIndex: 0,
              state: {},
              input: null,
              awaiting: null,
              deadline: null,
              dueAt: now,
              error: null,
              attempts: 0,
              lastError: null,
              version: 1,
              updatedAt: now
            })
          )
        )
        yield* inA(
          Effect.flatMap(SagaStore.SagaStore, (s) =>
            s.enqueue([{ idempotencyKey: "k-1", topic: "mail", payload: { to: "a" }, payloadJson: '{"to":"a"}' }])
          )
        )
        assert.strictEqual((yield* inA(Effect.flatMap(SagaStore.SagaStore, (s) => s.list("transfer")))).length, 1)
        assert.deepStrictEqual(yield* inB(Effect.flatMap(SagaStore.SagaStore, (s) => s.list("transfer"))), [])
        assert.strictEqual((yield* inA(Effect.flatMap(SagaStore.SagaStore, (s) => s.outbox))).length, 1)
        assert.deepStrictEqual(yield* inB(Effect.flatMap(SagaStore.SagaStore, (s) => s.outbox)), [])
        // B's correlation ids are its own: the same one inserts there too.
        assert.isTrue(
          yield* inB(
            Effect.flatMap(SagaStore.SagaStore, (s) =>
              s.insert({
                sagaName: "transfer",
                instanceId: "t-1",
                correlationId: "corr-t-1",
                status: "running",
                stepIndex: 0,
                state: {},
                input: null,
                awaiting: null,
                deadline: null,
                dueAt: now,
                error: null,
                attempts: 0,
                lastError: null,
                version: 1,
                updatedAt: now
              })
            )
          )
        )

        // Status reads the schema it is given.
        const statusA = yield* inSchema(A)(PgStatus.status)
        const statusB = yield* inSchema(B)(PgStatus.status)
        assert.deepStrictEqual(
          statusA.subscriptions.map((s) => s.subscriptionId),
          ["lease-1", "proj-1"]
        )
        assert.deepStrictEqual(
          statusB.subscriptions.map((s) => s.subscriptionId),
          ["lease-1"]
        )
        assert.strictEqual(statusB.subscriptions[0]!.leaseHolder, "worker-b")
      }))

    it.scoped("a subscription's wake-ups come from its own schema's appends, promptly, never from the other's", () =>
      Effect.gen(function* () {
        yield* migrated
        const { url } = yield* TestDatabase
        // Readers and writers are separate store layers (as separate processes would be), so every
        // wake-up a reader sees from a writer went through the server's channels.
        const readerA = yield* Layer.build(PgStore.layerSchema(A))
        const readerB = yield* Layer.build(PgStore.layerSchema(B))
        const writerA = yield* Layer.build(PgStore.layerSchema(A))
        const writerB = yield* Layer.build(PgStore.layerSchema(B))

        // A plain listener on the public channels: neither schema may notify there.
        const raw = new pg.Client({ connectionString: url })
        const heard: Array<string> = []
        yield* Effect.acquireRelease(
          Effect.promise(async () => {
            await raw.connect()
            raw.on("notification", (n) => heard.push(`${n.channel}:${n.payload ?? ""}`))
            await raw.query(`LISTEN mire_events; LISTEN mire_sagas; LISTEN "tenant_a.mire_events"`)
          }),
          () => Effect.promise(() => raw.end().catch(() => undefined))
        )

        const eventsA = yield* collect(Stream.unwrap(Effect.provide(Effect.map(SubscriptionStore.SubscriptionStore, (s) => s.wakeups), readerA)))
        const eventsB = yield* collect(Stream.unwrap(Effect.provide(Effect.map(SubscriptionStore.SubscriptionStore, (s) => s.wakeups), readerB)))
        const sagasA = yield* collect(Stream.unwrap(Effect.provide(Effect.map(SagaStore.SagaStore, (s) => s.wakeups), readerA)))
        const sagasB = yield* collect(Stream.unwrap(Effect.provide(Effect.map(SagaStore.SagaStore, (s) => s.wakeups), readerB)))

        const append = (context: typeof writerA, category: string) =>
          Effect.provide(EventStore.append(`${category}-1`, category, ExpectedVersion.Any, [event(`${category}.e`)]), context)
        // Both listeners are up once a writer's append reaches its reader (repeated until it does).
        const warm = (context: typeof writerA, category: string, queue: Queue.Queue<string>) =>
          eventually(
            Effect.zipRight(
              append(context, category),
              Effect.flatMap(Queue.takeAll(queue), (taken) =>
                [...taken].includes(category) ? Effect.void : Effect.fail("not yet")
              ).pipe(Effect.delay("100 millis"), Effect.retry({ times: 5 }))
            )
          )
        yield* warm(writerA, "warma", eventsA)
        yield* warm(writerB, "warmb", eventsB)

        // B's append reaches B's reader first; only then does A append. A listener on both channels
        // would hear B's notification before A's, so A's first wake-up after its warm-up is A's own.
        yield* append(writerB, "catb")
        assert.strictEqual(yield* nextPayload(eventsB, (p) => p === "warmb"), "catb")
        yield* append(writerA, "cata")
        assert.strictEqual(yield* nextPayload(eventsA, (p) => p === "warma"), "cata")

        // The same for the saga channel.
        yield* Effect.provide(Effect.flatMap(SagaStore.SagaStore, (s) => s.notify("sagab")), writerB)
        assert.strictEqual(yield* nextPayload(sagasB, () => false), "sagab")
        yield* Effect.provide(Effect.flatMap(SagaStore.SagaStore, (s) => s.notify("sagaa")), writerA)
        assert.strictEqual(yield* nextPayload(sagasA, () => false), "sagaa")

        // And a reader's own appends wake it in-process.
        yield* append(readerA, "locala")
        assert.strictEqual(yield* nextPayload(eventsA, (p) => p === "warma" || p === "cata"), "locala")

        // The public channels heard nothing of B; the first thing heard at all is A's, on A's channel.
        yield* eventually(Effect.suspend(() => (heard.some((h) => h === "tenant_a.mire_events:cata") ? Effect.void : Effect.fail("not yet"))))
        assert.isTrue(heard.every((h) => h.startsWith("tenant_a.mire_events:")), heard.join(", "))
      }))

    it.effect("a schema name mire does not accept is InvalidInput and creates nothing", () =>
      Effect.gen(function* () {
        const sql = yield* PgClient.PgClient
        const schemas = sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_namespace`.pipe(Effect.map((rows) => rows[0]!.n))
        const before = yield* schemas
        for (const bad of ['x"; DROP SCHEMA tenant_a CASCADE; --', "Tenant", "9lives", "pg_mire", "a-b", "", "x".repeat(49)]) {
          assert.isTrue(Either.isLeft(PgSchema.make(bad)), bad)
          const exit = yield* Effect.exit(PgMigrations.migrate().pipe(Effect.provide(PgSchema.layer(bad))))
          assert.isTrue(Exit.isFailure(exit))
          if (Exit.isFailure(exit)) {
            const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
            assert.strictEqual(error?._tag, "InvalidInput", bad)
          }
          const store = yield* Effect.exit(EventStore.streamVersion("x-1").pipe(Effect.provide(PgStore.layerSchema(bad))))
          assert.isTrue(Exit.isFailure(store))
        }
        assert.strictEqual(yield* schemas, before)
        assert.isTrue(Either.isRight(PgSchema.make("x".repeat(48))))
      }))
  })
})
