/**
 * Coalesced appends (issue 12): concurrent single-stream appends outside a
 * transaction share one `mire_append_each` statement, and each still gets
 * exactly the outcome it would have had alone; a stream row another
 * transaction holds never stalls the others.
 *
 * To put appends in one statement on purpose, the one worker
 * (`statements: 1`) is held without a lock (a lock wait would end after
 * 50 ms, migration 0022): a test-only trigger on `es_events` makes the
 * insert of a `gate.hold` event wait until its gate row (one per holding
 * stream) is opened by a plain connection; the appends made meanwhile wait
 * for the worker, and go out together when it is released.
 */
import { assert, describe, layer } from "@effect/vitest"
import type { AppendError } from "@mire/core/EventStore"
import * as EventStore from "@mire/core/EventStore"
import { ConcurrencyConflict } from "@mire/core/EventStoreError"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import type { CommittedEvents } from "@mire/core/RecordedEvent"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import pg from "pg"
import * as PgEventStore from "../src/PgEventStore.js"
import { migratedLayer, TestDatabase } from "./utils.js"

const ev = (eventType = "coalesce.e") => ({ eventType, schemaVersion: 1, data: { n: 1 } })

/** Data whose JSON text has what array literals and the newline-joined encoding must carry intact. */
const tricky = (id: string) => ({ id, text: 'line\nbreak, "quoted", back\\slash, {braces}, tab\t, é 🎉', list: ["a,b", "{}", ""] })

/** A plain connection, closed with the scope. */
const connection = Effect.gen(function* () {
  const { url } = yield* TestDatabase
  return yield* Effect.acquireRelease(
    Effect.promise(async () => {
      const c = new pg.Client({ connectionString: url })
      await c.connect()
      return c
    }),
    (c) => Effect.promise(() => c.end())
  )
})

const query = (c: pg.Client, text: string, values: ReadonlyArray<unknown> = []) =>
  Effect.promise(() => c.query(text, [...values]))

/**
 * The test gate: a `gate.hold` event's insert waits (in `pg_sleep` steps, each loop a new
 * snapshot) while its stream's gate row is closed. Idempotent.
 */
const installGate = (c: pg.Client) =>
  Effect.gen(function* () {
    yield* query(c, "CREATE TABLE IF NOT EXISTS test_gate (name text PRIMARY KEY, open boolean NOT NULL)")
    yield* query(
      c,
      `CREATE OR REPLACE FUNCTION test_gate_wait() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         WHILE NOT coalesce((SELECT open FROM test_gate WHERE name = NEW.stream_id), true) LOOP
           PERFORM pg_sleep(0.005);
         END LOOP;
         RETURN NEW;
       END $$`
    )
    yield* query(
      c,
      `CREATE OR REPLACE TRIGGER test_gate BEFORE INSERT ON es_events
       FOR EACH ROW WHEN (NEW.event_type = 'gate.hold') EXECUTE FUNCTION test_gate_wait()`
    )
  })

/** Polls `condition` every 20 ms until it holds; dies with `what` after 20 s. */
const waitUntil = (what: string, condition: Effect.Effect<boolean>) =>
  Effect.gen(function* () {
    const deadline = Date.now() + 20_000
    while (!(yield* condition)) {
      if (Date.now() > deadline) return yield* Effect.die(what)
      yield* Effect.sleep("20 millis")
    }
  })

/** How many backends of this test's database wait on `waitEvent` in a statement whose text contains `text`. */
const waiting = (c: pg.Client, waitEvent: string, text: string) =>
  Effect.map(
    query(
      c,
      `SELECT count(*)::int AS n FROM pg_stat_activity
       WHERE datname = current_database() AND wait_event = $1 AND strpos(query, $2) > 0`,
      [waitEvent, text]
    ),
    (result): number => result.rows[0].n
  )

/** One event appended to `streamId` by `c` (in its transaction, if it has one open), as another process would. */
const appendIn = (c: pg.Client, streamId: string, kind: "none" | "exact", expected: number) =>
  query(
    c,
    `SELECT * FROM mire_append_stream($1, 'other', $2, $3, ARRAY[gen_random_uuid()], ARRAY['coalesce.e'], ARRAY[1],
       ARRAY['{"n":1}'::jsonb], ARRAY['{}'::jsonb])`,
    [streamId, kind, expected]
  )

/**
 * Holds the coalescer's one worker: appends a `gate.hold` event to `streamId` with its gate
 * closed, then waits until that append's statement (`mire_append_each`) sleeps in the gate.
 * `release` opens the gate; `held` is that append.
 */
const holdWorker = (streamId: string) =>
  Effect.gen(function* () {
    const gate = yield* connection
    yield* installGate(gate)
    yield* query(gate, "INSERT INTO test_gate VALUES ($1, false) ON CONFLICT (name) DO UPDATE SET open = false", [streamId])
    const held = yield* Effect.fork(EventStore.append(streamId, "hold", ExpectedVersion.NoStream, [ev("gate.hold")]))
    yield* waitUntil(
      "the held append never waited at its gate",
      Effect.map(waiting(gate, "PgSleep", "mire_append_each"), (n) => n > 0)
    )
    return { held, release: query(gate, "UPDATE test_gate SET open = true WHERE name = $1", [streamId]) }
  })

/** Runs `appends` while the worker is held, so they go out in one statement once it is released. */
const together = <A>(hold: string, appends: ReadonlyArray<Effect.Effect<A, AppendError, EventStore.EventStore>>) =>
  Effect.gen(function* () {
    const { held, release } = yield* holdWorker(hold)
    const all = yield* Effect.fork(Effect.forEach(appends, Effect.either, { concurrency: "unbounded" }))
    // Every append has queued well before this (they only validate and enqueue).
    yield* Effect.sleep("300 millis")
    yield* release
    yield* Fiber.join(held)
    return yield* Fiber.join(all)
  })

/**
 * Waits until two appends wait for another transaction's lock, each in its own `mire_append_stream`
 * (run alone, off the coalescer's statement), and checks that `fiber`, running them, has no answer yet.
 */
const bothWaitAlone = (watcher: pg.Client, fiber: Fiber.Fiber<unknown, unknown>, what: string) =>
  Effect.gen(function* () {
    yield* waitUntil(what, Effect.map(waiting(watcher, "transactionid", "mire_append_stream"), (n) => n === 2))
    assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
  })

/**
 * While the `worker` is held: `waiting` (forked, each as an `Either`: they may wait for a lock) and
 * one-event appends to the new streams `ids`, which go out in one statement with them; then the
 * worker is released. The fiber of `waiting`, and what the others committed (within 20 s).
 */
const besideHeld = (
  worker: Effect.Effect.Success<ReturnType<typeof holdWorker>>,
  waiting: ReadonlyArray<Effect.Effect<CommittedEvents, AppendError, EventStore.EventStore>>,
  ids: ReadonlyArray<string>,
  category: string
) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(Effect.forEach(waiting, Effect.either, { concurrency: "unbounded" }))
    const others = yield* Effect.fork(
      Effect.forEach(ids, (id) => EventStore.append(id, category, ExpectedVersion.NoStream, [ev()]), { concurrency: "unbounded" })
    )
    // Every append has queued well before this (they only validate and enqueue).
    yield* Effect.sleep("300 millis")
    yield* worker.release
    yield* Fiber.join(worker.held)
    const done = yield* Fiber.join(others).pipe(Effect.timeout("20 seconds"))
    return { waiting: fiber, done }
  })

const committed = (result: Either.Either<CommittedEvents, AppendError>): CommittedEvents => {
  if (Either.isLeft(result)) return assert.fail(`expected a commit, got ${result.left._tag}: ${result.left.message}`)
  return result.right
}

const failed = (result: Either.Either<CommittedEvents, AppendError>): AppendError => {
  if (Either.isRight(result)) return assert.fail(`expected a refusal, got a commit of ${result.right.streamId}`)
  return result.left
}

/** The fields of a `ConcurrencyConflict` (the error itself, for a clear failure otherwise). */
const conflict = (error: AppendError) =>
  error instanceof ConcurrencyConflict ? { streamId: error.streamId, expected: error.expected, actual: error.actual } : error._tag

describe("PgEventStore coalesced appends", () => {
  layer(
    PgEventStore.layer.pipe(
      Layer.provide(PgEventStore.layerCoalescing({ statements: 1 })),
      Layer.provideMerge(migratedLayer())
    ),
    { timeout: "120 seconds", excludeTestServices: true }
  )((it) => {
    it.scoped("appends waiting for the worker go out in one statement: one transaction, each its own versions", () =>
      Effect.gen(function* () {
        const ids = Array.from({ length: 12 }, (_, i) => `one-${i}`)
        const results = (yield* together(
          "hold-one",
          ids.map((id) => EventStore.append(id, "one", ExpectedVersion.NoStream, [ev(), { ...ev(), data: tricky(id) }]))
        )).map(committed)
        assert.strictEqual(new Set(results.map((r) => r.transactionId)).size, 1)
        assert.deepStrictEqual(
          results.map((r) => [r.streamId, r.firstVersion, r.lastVersion, r.lastPosition - r.firstPosition]),
          ids.map((id) => [id, 1, 2, 1n])
        )
        const positions = results.flatMap((r) => [r.firstPosition, r.lastPosition])
        assert.strictEqual(new Set(positions).size, positions.length)
        for (const id of ids) {
          const events = yield* Stream.runCollect(EventStore.readStream(id))
          assert.deepStrictEqual(
            Chunk.toReadonlyArray(events).map((e) => [e.streamVersion, e.data]),
            [
              [1, { n: 1 }],
              [2, tricky(id)]
            ]
          )
        }
      }))

    it.scoped("each append of a statement is decided on its own: conflicts, archived and deleted streams refuse only themselves", () =>
      Effect.gen(function* () {
        yield* EventStore.append("mix-exists", "mix", ExpectedVersion.NoStream, [ev()])
        yield* EventStore.append("mix-stale", "mix", ExpectedVersion.NoStream, [ev()])
        yield* EventStore.append("mix-archived", "mix", ExpectedVersion.NoStream, [ev()])
        yield* EventStore.archive("mix-archived")
        yield* EventStore.append("mix-deleted", "mix", ExpectedVersion.NoStream, [ev()])
        yield* EventStore.deleteStream("mix-deleted")
        const [fresh, twinA, twinB, stale, archived, deleted, missing, any] = yield* together("hold-mix", [
          EventStore.append("mix-new", "mix", ExpectedVersion.NoStream, [ev()]),
          EventStore.append("mix-exists", "mix", ExpectedVersion.Exact(1), [ev()]),
          EventStore.append("mix-exists", "mix", ExpectedVersion.Exact(1), [ev()]),
          EventStore.append("mix-stale", "mix", ExpectedVersion.Exact(5), [ev()]),
          EventStore.append("mix-archived", "mix", ExpectedVersion.Any, [ev()]),
          EventStore.append("mix-deleted", "mix", ExpectedVersion.Any, [ev()]),
          EventStore.append("mix-missing", "mix", ExpectedVersion.StreamExists, [ev()]),
          EventStore.append("mix-any", "mix", ExpectedVersion.Any, [ev(), ev(), ev()])
        ])
        const ok = [committed(fresh!), committed(any!)]
        assert.deepStrictEqual(
          ok.map((r) => [r.streamId, r.firstVersion, r.lastVersion]),
          [
            ["mix-new", 1, 1],
            ["mix-any", 1, 3]
          ]
        )
        // Two appends of one stream at the same expected version: exactly one holds.
        const twins = [twinA!, twinB!]
        const won = twins.filter(Either.isRight).map(committed)
        assert.strictEqual(won.length, 1)
        assert.deepStrictEqual([won[0]!.firstVersion, won[0]!.lastVersion], [2, 2])
        const lost = failed(twins.find(Either.isLeft)!)
        assert.deepStrictEqual(conflict(lost), { streamId: "mix-exists", expected: "exact(1)", actual: 2 })
        assert.strictEqual(new Set([...ok, ...won].map((r) => r.transactionId)).size, 1)
        assert.deepStrictEqual(conflict(failed(stale!)), { streamId: "mix-stale", expected: "exact(5)", actual: 1 })
        assert.strictEqual(failed(archived!)._tag, "StreamArchived")
        const gone = failed(deleted!)
        assert.isTrue(gone._tag === "StreamDeleted" && gone.tombstoneVersion === 2)
        assert.deepStrictEqual(conflict(failed(missing!)), { streamId: "mix-missing", expected: "stream-exists", actual: null })
        assert.strictEqual(yield* EventStore.streamVersion("mix-stale"), 1)
        assert.strictEqual(yield* EventStore.streamVersion("mix-exists"), 2)
        assert.strictEqual(yield* EventStore.streamVersion("mix-missing"), 0)
      }))

    it.scoped("a statement the server refuses as a whole is run append by append, each by its caller: only the bad one fails", () =>
      Effect.gen(function* () {
        const c = yield* connection
        yield* query(
          c,
          `CREATE FUNCTION coalesce_poison() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.event_type = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$`
        )
        yield* query(c, "CREATE TRIGGER coalesce_poison BEFORE INSERT ON es_events FOR EACH ROW EXECUTE FUNCTION coalesce_poison()")
        const results = yield* together(
          "hold-poison",
          ["a", "poison", "b"].map((type) => EventStore.append(`poison-${type}`, "poison", ExpectedVersion.NoStream, [ev(type)]))
        ).pipe(Effect.ensuring(query(c, "DROP TRIGGER coalesce_poison ON es_events")))
        const [a, poison, b] = results
        assert.strictEqual(committed(a!).lastVersion, 1)
        assert.strictEqual(committed(b!).lastVersion, 1)
        const error = failed(poison!)
        assert.isTrue(error._tag === "StoreError" && error.message.includes("poisoned"), error.message)
        assert.strictEqual(yield* EventStore.streamVersion("poison-poison"), 0)
      }))

    it.scoped("a stream row another transaction locked stalls no other append; its appends get their outcome once it is released", () =>
      Effect.gen(function* () {
        yield* EventStore.append("locked-1", "locked", ExpectedVersion.NoStream, [ev()])
        yield* EventStore.append("locked-2", "locked", ExpectedVersion.NoStream, [ev()])
        // The locked streams' appends go out in one statement with twelve others.
        const worker = yield* holdWorker("hold-locked")
        // Another transaction locks one stream (as `loadForUpdate` does) and appends to the other.
        const locker = yield* connection
        const watcher = yield* connection
        yield* query(locker, "BEGIN")
        yield* query(locker, "SELECT 1 FROM es_streams WHERE stream_id = 'locked-1' FOR UPDATE")
        yield* appendIn(locker, "locked-2", "exact", 1)
        const ids = Array.from({ length: 12 }, (_, i) => `free-${i}`)
        const { waiting: locked, done } = yield* besideHeld(
          worker,
          [
            EventStore.append("locked-1", "locked", ExpectedVersion.Exact(1), [ev()]),
            EventStore.append("locked-2", "locked", ExpectedVersion.Exact(1), [ev()])
          ],
          ids,
          "free"
        )
        // All commit while the lock is held, and so do appends made after them (the worker is free).
        assert.deepStrictEqual(
          done.map((r) => [r.streamId, r.lastVersion]),
          ids.map((id) => [id, 1])
        )
        const later = yield* Effect.forEach(
          Array.from({ length: 8 }, (_, i) => `later-${i}`),
          (id) => EventStore.append(id, "free", ExpectedVersion.NoStream, [ev()]),
          { concurrency: "unbounded" }
        ).pipe(Effect.timeout("20 seconds"))
        assert.strictEqual(later.length, 8)
        // The locked streams' appends wait for the other transaction, each alone (its own `mire_append_stream`).
        yield* bothWaitAlone(watcher, locked, "the locked streams' appends never waited alone for the lock")
        yield* query(locker, "COMMIT")
        const [stillHolds, stale] = yield* Fiber.join(locked)
        assert.deepStrictEqual([committed(stillHolds!).firstVersion, committed(stillHolds!).lastVersion], [2, 2])
        assert.deepStrictEqual(conflict(failed(stale!)), { streamId: "locked-2", expected: "exact(1)", actual: 2 })
        assert.strictEqual(yield* EventStore.streamVersion("locked-1"), 2)
        assert.strictEqual(yield* EventStore.streamVersion("locked-2"), 2)
      }))

    it.scoped("a new stream another transaction inserted stalls no other append; a NoStream append to it conflicts once that commits, commits once it rolls back", () =>
      Effect.gen(function* () {
        const worker = yield* holdWorker("hold-pending")
        const committer = yield* connection
        const rollsBack = yield* connection
        const watcher = yield* connection
        yield* query(committer, "BEGIN")
        yield* appendIn(committer, "pending-commit", "none", 0)
        yield* query(rollsBack, "BEGIN")
        yield* appendIn(rollsBack, "pending-rollback", "none", 0)
        const { waiting: pending, done } = yield* besideHeld(
          worker,
          [
            EventStore.append("pending-commit", "pending", ExpectedVersion.NoStream, [ev(), ev()]),
            EventStore.append("pending-rollback", "pending", ExpectedVersion.NoStream, [ev(), ev()])
          ],
          Array.from({ length: 12 }, (_, i) => `beside-${i}`),
          "beside"
        )
        assert.strictEqual(done.length, 12)
        const later = yield* EventStore.append("beside-later", "beside", ExpectedVersion.NoStream, [ev()]).pipe(
          Effect.timeout("20 seconds")
        )
        assert.strictEqual(later.lastVersion, 1)
        yield* bothWaitAlone(watcher, pending, "the pending streams' appends never waited alone for the other transactions")
        yield* query(committer, "COMMIT")
        yield* query(rollsBack, "ROLLBACK")
        const [lost, won] = yield* Fiber.join(pending)
        assert.deepStrictEqual(conflict(failed(lost!)), { streamId: "pending-commit", expected: "no-stream", actual: 1 })
        assert.deepStrictEqual([committed(won!).firstVersion, committed(won!).lastVersion], [1, 2])
        assert.strictEqual(yield* EventStore.streamVersion("pending-commit"), 1)
        assert.strictEqual(yield* EventStore.streamVersion("pending-rollback"), 2)
      }))

    it.scoped("an append interrupted while it waits for the worker writes nothing", () =>
      Effect.gen(function* () {
        const { held, release } = yield* holdWorker("hold-interrupt")
        const dropped = yield* Effect.fork(EventStore.append("interrupted-1", "interrupted", ExpectedVersion.NoStream, [ev()]))
        const kept = yield* Effect.fork(EventStore.append("interrupted-2", "interrupted", ExpectedVersion.NoStream, [ev()]))
        yield* Effect.sleep("300 millis")
        yield* Fiber.interrupt(dropped)
        yield* release
        yield* Fiber.join(held)
        assert.strictEqual((yield* Fiber.join(kept)).lastVersion, 1)
        assert.strictEqual(yield* EventStore.streamVersion("interrupted-1"), 0)
      }))

    it.scoped("inside a transaction an append is not coalesced: it commits or rolls back with the transaction", () =>
      Effect.gen(function* () {
        const { held, release } = yield* holdWorker("hold-tx")
        // With the worker held, a coalesced append could not finish before the release.
        const inside = yield* EventStore.transaction(EventStore.append("tx-1", "tx", ExpectedVersion.NoStream, [ev()])).pipe(
          Effect.timeout("10 seconds")
        )
        assert.strictEqual(inside.lastVersion, 1)
        yield* release
        yield* Fiber.join(held)
      }))
  })

  layer(
    PgEventStore.layer.pipe(Layer.provide(PgEventStore.layerCoalescing({ statements: 0 })), Layer.provideMerge(migratedLayer())),
    { timeout: "60 seconds", excludeTestServices: true }
  )((it) => {
    it.effect("statements: 0 sends each append as its own statement", () =>
      Effect.gen(function* () {
        const results = yield* Effect.forEach(
          Array.from({ length: 24 }, (_, i) => i),
          (i) => EventStore.append(`off-${i}`, "off", ExpectedVersion.NoStream, [ev()]),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(new Set(results.map((r) => r.transactionId)).size, 24)
      }))
  })

  describe("layerCoalescing", () => {
    layer(Layer.empty)((it) => {
      it.effect("refuses options that are not counts, before anything touches the database", () =>
        Effect.gen(function* () {
          for (const options of [{ statements: -1 }, { statements: 1.5 }, { maxAppends: 0 }, { maxAppends: Number.NaN }]) {
            const exit = yield* Effect.exit(Layer.build(PgEventStore.layerCoalescing(options)).pipe(Effect.scoped))
            assert.isTrue(Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error._tag === "InvalidInput")
          }
        }))
    })
  })
})
