import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, layer } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Aggregate from "../../core/src/Aggregate.js"
import * as EventStore from "../../core/src/EventStore.js"
import * as ExpectedVersion from "../../core/src/ExpectedVersion.js"
import * as Saga from "../../core/src/Saga.js"
import * as SagaRunner from "../../core/src/SagaRunner.js"
import * as SagaStore from "../../core/src/SagaStore.js"
import * as Subscription from "../../core/src/Subscription.js"
import { completedHistory, sagaClaimSuite, sagaSuite, startWorker, unique, waitUntil, world } from "@mire/core/conformance"
import * as PgStore from "../src/PgStore.js"
import { IdleInTransactionTimeout } from "../src/PgTransaction.js"
import { migratedLayer } from "./utils.js"

const live = () => PgStore.layer.pipe(Layer.provideMerge(migratedLayer({ maxConnections: 40 })))

sagaSuite("postgres", live())
sagaClaimSuite("postgres", live(), { live: true })

describe("sagas on postgres", () => {
  layer(live(), { timeout: "120 seconds", excludeTestServices: true })((it) => {
    it.effect("a step's append cancelled by the server (SQLSTATE 57014) is retried: the saga completes, nothing compensates", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const store = yield* SagaStore.SagaStore
        const reserving = yield* Deferred.make<void>()
        const proceed = yield* Deferred.make<void>()
        let runs = 0
        // The first run of the step pauses until the lock below is held (taken earlier, its xid would
        // hold back the start event itself).
        const w = world({
          onReserve: Effect.suspend(() =>
            ++runs === 1 ? Effect.zipRight(Deferred.succeed(reserving, undefined), Deferred.await(proceed)) : Effect.void
          )
        })
        const stock = `${w.Stock.category}-sku1`
        yield* EventStore.append(stock, w.Stock.category, ExpectedVersion.Any, [
          { eventType: `${w.Stock.category}.released`, schemaVersion: 1, data: { order: "setup" } }
        ])
        const worker = yield* startWorker(w, "w1")
        yield* w.place("cancelled", 10)
        const id = `${w.Order.category}-cancelled`
        yield* Deferred.await(reserving)
        // Another session holds the stock stream's row, so the step's append waits on it.
        const locked = yield* Deferred.make<void>()
        const unlock = yield* Deferred.make<void>()
        const blocker = yield* Effect.fork(
          sql.withTransaction(
            Effect.gen(function* () {
              yield* sql`SELECT version FROM es_streams WHERE stream_id = ${stock} FOR UPDATE`
              yield* Deferred.succeed(locked, undefined)
              yield* Deferred.await(unlock)
            })
          )
        )
        yield* Deferred.await(locked)
        yield* Deferred.succeed(proceed, undefined)
        const waiting = sql<{ pid: number }>`
          SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()
            AND wait_event_type = 'Lock' AND query LIKE '%mire_append%'`
        yield* waitUntil(Effect.map(waiting, (rows) => rows.length === 1), "the step's append to wait on the lock")
        const [backend] = yield* waiting
        const [cancel] = yield* sql<{ ok: boolean }>`SELECT pg_cancel_backend(${backend!.pid}) AS ok`
        assert.isTrue(cancel!.ok)
        const statusOf = Effect.map(SagaRunner.status(w.fulfilment), (all) => all.find((s) => s.instanceId === id))
        // The retry waits on the lock again; meanwhile the failed attempt shows in status.
        yield* waitUntil(Effect.map(statusOf, (s) => s?.attempts === 1), "the failed attempt in status")
        const retrying = yield* statusOf
        assert.strictEqual(retrying?.status, "running")
        assert.match(retrying?.lastError ?? "", /canceling statement due to user request/)
        yield* Deferred.succeed(unlock, undefined)
        yield* Fiber.join(blocker)
        yield* waitUntil(Effect.map(statusOf, (s) => s?.status === "completed"), "completion")
        const steps = (yield* store.history(w.fulfilment.name, id)).map((h) => `${h.step}:${h.outcome}`)
        assert.deepStrictEqual(steps, completedHistory)
        assert.strictEqual((yield* w.countEvents(w.Stock, "reserved")).get(id), 1)
        assert.strictEqual(runs, 1, "the step ran once; only its write was redone")
        // The cancelled session itself stayed usable (a cancel is not a termination).
        const alive = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${backend!.pid}`
        assert.strictEqual(alive[0]!.n, 1)
        yield* worker.stop
      }))

    it.effect("a corrupt saga or outbox row read back is a typed StoreError naming the row, never a defect", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const store = yield* SagaStore.SagaStore
        const saga = `corrupt${unique("")}`
        const row = (instance: string, input: string) => sql`
          INSERT INTO es_saga_instances (saga_name, instance_id, correlation_id, status, step_index, state, input, due_at)
          VALUES (${saga}, ${instance}, ${`saga:${saga}:${instance}`}, 'running', 0, '{}'::jsonb, ${input}::jsonb, now())`
        // A well-formed row reads back, its start event's position a bigint again.
        yield* row(
          "good",
          JSON.stringify({
            _tag: "Start",
            event: { streamId: "s-1", streamVersion: 1, globalPosition: "9007199254740993", eventType: "s.begun", schemaVersion: 1, data: {} }
          })
        )
        const [good] = yield* store.list(saga)
        assert.deepStrictEqual(good?.input, {
          _tag: "Start",
          event: { streamId: "s-1", streamVersion: 1, globalPosition: 9007199254740993n, eventType: "s.begun", schemaVersion: 1, data: {} }
        })
        // An input of no known shape.
        yield* row("bad", JSON.stringify({ kind: "start", data: {} }))
        const listed = yield* Effect.flip(store.list(saga))
        assert.strictEqual(listed._tag, "StoreError")
        assert.strictEqual(listed.operation, "sagaList")
        assert.match(listed.message, /corrupt row/)
        // Claiming it decodes it too: a typed error for this worker, which retries after the claim expires.
        yield* sql`DELETE FROM es_saga_instances WHERE saga_name = ${saga} AND instance_id = 'good'`
        const claimed = yield* Effect.flip(store.claimDue(saga, new Date(Date.now() + 1_000), crypto.randomUUID(), new Date(Date.now() + 60_000)))
        assert.strictEqual(claimed.operation, "sagaClaimDue")
        assert.match(claimed.message, /corrupt row/)
        // An outbox payload that is not a JSON object.
        const key = `corrupt${unique("")}`
        yield* sql`INSERT INTO es_outbox (idempotency_key, topic, payload) VALUES (${key}, 't', '[1, 2]'::jsonb)`
        const outbox = yield* Effect.flip(store.outbox)
        assert.strictEqual(outbox.operation, "outbox")
        assert.match(outbox.message, /corrupt row/)
        yield* sql`DELETE FROM es_outbox WHERE idempotency_key = ${key}`
      }))

    it.effect("step inputs stored in mire 0.1's form are still read, and written back in the current form", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const store = yield* SagaStore.SagaStore
        const saga = `legacy${unique("")}`
        const row = (instance: string, input: unknown) => sql`
          INSERT INTO es_saga_instances (saga_name, instance_id, correlation_id, status, step_index, state, input, due_at)
          VALUES (${saga}, ${instance}, ${`saga:${saga}:${instance}`}, 'running', 0, '{}'::jsonb, ${JSON.stringify(input)}::jsonb, now())`
        yield* row("a", { kind: "start", eventType: "s.begun", schemaVersion: 2, data: { n: 1 } })
        yield* row("b", { kind: "response", eventType: "s.replied", schemaVersion: 1, data: { ok: true } })
        yield* row("c", { kind: "none" })
        const rows = yield* store.list(saga)
        const byId = new Map(rows.map((r) => [r.instanceId, r.input]))
        assert.deepStrictEqual(byId.get("a"), {
          _tag: "Start",
          event: {
            streamId: SagaStore.legacyStreamId,
            streamVersion: 0,
            globalPosition: 0n,
            eventType: "s.begun",
            schemaVersion: 2,
            data: { n: 1 }
          }
        })
        assert.deepStrictEqual(byId.get("b"), { _tag: "Response", eventType: "s.replied", data: { ok: true } })
        assert.deepStrictEqual(byId.get("c"), { _tag: "None" })
        // Written back, an input takes the current form.
        assert.deepStrictEqual(yield* Schema.encode(SagaStore.StoredInput)(byId.get("b")!), {
          _tag: "Response",
          eventType: "s.replied",
          data: { ok: true }
        })
      }))

    it.effect("a running step holds no transaction: an unrelated subscription gets a new event while the step runs", () =>
      Effect.gen(function* () {
        const tag = unique("")
        const none = { initial: {}, apply: (s: {}) => s }
        const Begun = Schema.TaggedStruct("Begun", {})
        const Job = Aggregate.make({ category: `job${tag}`, events: Begun, ...none })
        const other = `other${tag}`
        const started = yield* Deferred.make<void>()
        // The step runs until the test releases it, which it does only after observing the delivery.
        const release = yield* Deferred.make<void>()
        const State = Schema.Struct({ n: Schema.Number })
        const saga = Saga.make({
          name: `slow${tag}`,
          state: State,
          startOn: { aggregate: Job, start: (_, recorded) => Option.some({ instanceId: recorded.streamId, state: { n: 0 } }) },
          steps: [
            Saga.step<typeof State.Type, typeof Begun.Type>("call-provider", {
              run: () => Effect.zipRight(Deferred.succeed(started, undefined), Effect.as(Deferred.await(release), {}))
            })
          ]
        })
        const scope = yield* Scope.make()
        const received = new Set<string>()
        const sub = yield* Subscription.make({ subscriptionId: `unrelated${tag}`, categories: [other], pollInterval: "100 millis" }).pipe(
          Scope.extend(scope)
        )
        yield* sub.batches.pipe(
          Stream.runForEach((batch) =>
            Effect.sync(() => {
              for (const e of batch) received.add(e.streamId)
            })
          ),
          Effect.forkIn(scope)
        )
        const appendOther = (id: string) =>
          EventStore.append(`${other}-${id}`, other, ExpectedVersion.Any, [{ eventType: `${other}.happened`, schemaVersion: 1, data: {} }])
        yield* appendOther("warmup")
        yield* waitUntil(Effect.sync(() => received.has(`${other}-warmup`)), "the subscription to run")
        yield* SagaRunner.run([saga], { workerId: "w1", pollInterval: "100 millis" }).pipe(Scope.extend(scope))
        yield* EventStore.append(`${Job.category}-j1`, Job.category, ExpectedVersion.Any, [
          { eventType: `${Job.category}.begun`, schemaVersion: 1, data: {} }
        ])
        yield* Deferred.await(started)
        yield* appendOther("during")
        // The step cannot finish before the release below, so a step holding an xid would hold this
        // delivery back forever: the deadline only bounds a slow machine.
        yield* waitUntil(Effect.sync(() => received.has(`${other}-during`)), "delivery while the step runs", 15_000)
        const [running] = yield* SagaRunner.status(saga)
        assert.strictEqual(running?.status, "running", "the step is still running")
        assert.deepStrictEqual(yield* SagaRunner.status(saga, "completed"), [])
        yield* Deferred.succeed(release, undefined)
        yield* waitUntil(
          Effect.map(SagaRunner.status(saga, "completed"), (done) => done.length === 1),
          "the slow step to complete",
          15_000
        )
        yield* Scope.close(scope, Exit.void)
      }))
  })
})

describe("transactions bound their idle time", () => {
  layer(live(), { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.effect("SET LOCAL idle_in_transaction_session_timeout: the configured value inside, the server's outside", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const show = sql<{ idle_in_transaction_session_timeout: string }>`SHOW idle_in_transaction_session_timeout`.pipe(
          Effect.map((rows) => rows[0]!.idle_in_transaction_session_timeout)
        )
        assert.strictEqual(yield* EventStore.transaction(show), "1min")
        assert.strictEqual(
          yield* EventStore.transaction(show).pipe(Effect.provideService(IdleInTransactionTimeout, Duration.millis(1500))),
          "1500ms"
        )
        // Nested transactions (savepoints) keep the outer one's setting.
        assert.strictEqual(
          yield* EventStore.transaction(EventStore.transaction(show)).pipe(
            Effect.provideService(IdleInTransactionTimeout, Duration.seconds(5))
          ),
          "5s"
        )
        assert.strictEqual(yield* show, "0")
      }))

    it.effect("a transaction left idle past the configured timeout is ended by the server; the store recovers", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const tag = unique("")
        const frozen = EventStore.transaction(
          Effect.gen(function* () {
            yield* EventStore.append(`idle${tag}-1`, `idle${tag}`, ExpectedVersion.Any, [
              { eventType: `idle${tag}.happened`, schemaVersion: 1, data: {} }
            ])
            // A frozen leader: its transaction holds an xid and sends nothing.
            yield* Effect.sleep("2500 millis")
            yield* sql`SELECT 1`
          })
        ).pipe(Effect.provideService(IdleInTransactionTimeout, Duration.seconds(1)))
        const exit = yield* Effect.exit(frozen)
        assert.isTrue(Exit.isFailure(exit))
        if (Exit.isFailure(exit)) {
          const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
          assert.strictEqual(error?._tag, "StoreError", String(exit.cause))
        }
        // Nothing of it was committed, and the store works on.
        const events = yield* EventStore.readStream(`idle${tag}-1`).pipe(Stream.runCollect)
        assert.strictEqual(events.length, 0)
        yield* EventStore.append(`idle${tag}-2`, `idle${tag}`, ExpectedVersion.Any, [
          { eventType: `idle${tag}.happened`, schemaVersion: 1, data: {} }
        ])
      }))
  })
})
