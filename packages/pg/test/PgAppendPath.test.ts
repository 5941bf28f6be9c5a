/**
 * The append path's wake-ups (issue 12): an append never NOTIFYs inside its
 * own transaction (a notifying commit takes a database-wide lock through its
 * WAL flush, serialising every notifying commit); the store notifies after
 * the commit, coalesced, and wakes this process's subscribers in-process.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import pg from "pg"
import * as PgEventStore from "../src/PgEventStore.js"
import * as PgWakeups from "../src/PgWakeups.js"
import { migratedLayer, TestDatabase } from "./utils.js"

const ev = { eventType: "append.e", schemaVersion: 1, data: {} }

interface Heard {
  readonly payload: string
  readonly pid: number
}

/** A plain connection that LISTENs on `mire_events`, with what it heard, closed with the scope. */
const listener = Effect.gen(function* () {
  const { url } = yield* TestDatabase
  const heard = yield* Queue.unbounded<Heard>()
  const client = yield* Effect.acquireRelease(
    Effect.promise(async () => {
      const c = new pg.Client({ connectionString: url })
      c.on("notification", (m) => {
        heard.unsafeOffer({ payload: m.payload ?? "", pid: m.processId })
      })
      await c.connect()
      await c.query(`LISTEN ${PgEventStore.channel}`)
      return c
    }),
    (c) => Effect.promise(() => c.end())
  )
  return { client, heard }
})

/** The payloads heard up to and including `last` (fails after 10 s: a NOTIFY that never came). */
const heardUntil = (heard: Queue.Queue<Heard>, last: string) =>
  Effect.gen(function* () {
    const payloads: Array<string> = []
    while (payloads[payloads.length - 1] !== last) payloads.push((yield* Queue.take(heard)).payload)
    return payloads
  }).pipe(Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => `no NOTIFY of ${last} within 10 s` }))

/** Subscribes to the layer's in-process hub (for this scope). */
const local = Effect.flatMap(PgWakeups.LocalWakeups, (hub) => PubSub.subscribe(hub))

const appendTo = (category: string, n = 1) =>
  EventStore.append(`${category}-${n}`, category, ExpectedVersion.NoStream, [ev])

describe("PgEventStore append path", () => {
  layer(
    PgEventStore.layer.pipe(Layer.provideMerge(PgWakeups.localLayer), Layer.provideMerge(migratedLayer())),
    { timeout: "60 seconds", excludeTestServices: true }
  )((it) => {
    it.scoped("mire_append itself sends no NOTIFY: the appending transaction takes no notify lock", () =>
      Effect.gen(function* () {
        const { client, heard } = yield* listener
        const pid = yield* Effect.promise(() => client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid"))
        yield* Effect.promise(() =>
          client.query(
            `SELECT * FROM mire_append(ARRAY['fn-1'], ARRAY['fn'], ARRAY['none'], ARRAY[0]::int8[], ARRAY[1]::int8[],
               ARRAY[gen_random_uuid()], ARRAY['fn-1'], ARRAY[1]::int8[], ARRAY['append.e'], ARRAY[1],
               ARRAY['{}'::jsonb], ARRAY['{}'::jsonb])`
          )
        )
        // A session's own notifications arrive when its transaction commits, before its next query returns.
        yield* Effect.promise(() => client.query("SELECT 1"))
        const own = (yield* Queue.takeAll(heard)).pipe((all) => [...all].filter((h) => h.pid === pid.rows[0]!.pid))
        assert.deepStrictEqual(own, [])
        assert.strictEqual(yield* EventStore.streamVersion("fn-1"), 1)
      }))

    it.scoped("mire_append_stream and mire_append_all send no NOTIFY either", () =>
      Effect.gen(function* () {
        const { client, heard } = yield* listener
        const pid = yield* Effect.promise(() => client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid"))
        yield* Effect.promise(() =>
          client.query(
            `SELECT * FROM mire_append_stream('fns-1', 'fns', 'none', 0, ARRAY[gen_random_uuid()], ARRAY['append.e'],
               ARRAY[1], ARRAY['{}'::jsonb], ARRAY['{}'::jsonb])`
          )
        )
        yield* Effect.promise(() =>
          client.query(
            `SELECT * FROM mire_append_all(ARRAY['fna-1', 'fna-2'], ARRAY['fna', 'fna'], ARRAY['none', 'none'], ARRAY[0, 0]::int8[],
               ARRAY[1, 1]::int8[], ARRAY[gen_random_uuid(), gen_random_uuid()], ARRAY['fna-1', 'fna-2'], ARRAY[1, 1]::int8[],
               ARRAY['append.e', 'append.e'], ARRAY[1, 1], ARRAY['{}'::jsonb, '{}'::jsonb], ARRAY['{}'::jsonb, '{}'::jsonb])`
          )
        )
        yield* Effect.promise(() => client.query("SELECT 1"))
        const own = (yield* Queue.takeAll(heard)).pipe((all) => [...all].filter((h) => h.pid === pid.rows[0]!.pid))
        assert.deepStrictEqual(own, [])
        assert.strictEqual(yield* EventStore.streamVersion("fns-1"), 1)
        assert.strictEqual(yield* EventStore.streamVersion("fna-2"), 1)
      }))

    it.scoped("mire_append_all is all or nothing: a lost expectation raises MR409 naming the stream and its version, and writes nothing", () =>
      Effect.gen(function* () {
        const { client } = yield* listener
        const error = yield* Effect.flip(
          Effect.tryPromise(() =>
            client.query(
              `SELECT * FROM mire_append_all(ARRAY['fnb-1', 'fnb-2'], ARRAY['fnb', 'fnb'], ARRAY['none', 'exact'],
                 ARRAY[0, 5]::int8[], ARRAY[1, 1]::int8[], ARRAY[gen_random_uuid(), gen_random_uuid()], ARRAY['fnb-1', 'fnb-2'],
                 ARRAY[1, 1]::int8[], ARRAY['append.e', 'append.e'], ARRAY[1, 1], ARRAY['{}'::jsonb, '{}'::jsonb],
                 ARRAY['{}'::jsonb, '{}'::jsonb])`
            )
          )
        )
        const cause: unknown = error.error
        assert.propertyVal(cause, "code", "MR409")
        assert.propertyVal(cause, "detail", "fnb-2")
        assert.propertyVal(cause, "hint", "0")
        assert.strictEqual(yield* EventStore.streamVersion("fnb-1"), 0)
      }))

    it.scoped("an append wakes this process's subscribers in-process and other connections by NOTIFY", () =>
      Effect.gen(function* () {
        const { heard } = yield* listener
        const mine = yield* local
        yield* appendTo("plain")
        assert.deepStrictEqual(yield* Queue.take(mine), { channel: PgEventStore.channel, payload: "plain" })
        assert.deepStrictEqual(yield* heardUntil(heard, "plain"), ["plain"])
      }))

    it.scoped("inside EventStore.transaction: woken once the transaction commits, never for a rollback", () =>
      Effect.gen(function* () {
        const { heard } = yield* listener
        const mine = yield* local
        const pendingInside = yield* EventStore.transaction(
          Effect.zipRight(appendTo("txa"), Effect.map(Queue.takeAll(mine), (all) => [...all]))
        )
        assert.deepStrictEqual(pendingInside, [])
        assert.deepStrictEqual(yield* Queue.take(mine), { channel: PgEventStore.channel, payload: "txa" })
        assert.deepStrictEqual(yield* heardUntil(heard, "txa"), ["txa"])

        const rolledBack = yield* Effect.either(EventStore.transaction(Effect.zipRight(appendTo("txr"), Effect.fail("no"))))
        assert.isTrue(rolledBack._tag === "Left")
        assert.strictEqual(yield* EventStore.streamVersion("txr-1"), 0)
        yield* appendTo("txz")
        assert.deepStrictEqual(yield* Queue.take(mine), { channel: PgEventStore.channel, payload: "txz" })
        assert.deepStrictEqual(yield* heardUntil(heard, "txz"), ["txz"])
      }))

    it.scoped("inside a transaction mire did not open, the NOTIFY goes with that transaction's commit", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const { heard } = yield* listener
        yield* sql.withTransaction(appendTo("rawtx"))
        assert.deepStrictEqual(yield* heardUntil(heard, "rawtx"), ["rawtx"])
      }))

    it.scoped("concurrent appends to one category are coalesced into fewer NOTIFYs", () =>
      Effect.gen(function* () {
        const { heard } = yield* listener
        const n = 64
        yield* Effect.all(
          Array.from({ length: n }, (_, i) => appendTo("coal", i + 1)),
          { concurrency: "unbounded", discard: true }
        )
        // The notifier sends in order, so every `coal` NOTIFY arrives before the marker's.
        yield* appendTo("coalend")
        const payloads = yield* heardUntil(heard, "coalend")
        const coal = payloads.filter((p) => p === "coal").length
        assert.isAtLeast(coal, 1)
        assert.isBelow(coal, n)
        assert.deepStrictEqual(new Set(payloads), new Set(["coal", "coalend"]))
      }))

    it.scoped("appends one after another get at most one NOTIFY per 5 ms between them", () =>
      Effect.gen(function* () {
        const { heard } = yield* listener
        // Each append commits before the next starts: sent back to back, nearly every one had its own NOTIFY.
        const started = yield* Clock.currentTimeMillis
        let n = 0
        while ((yield* Clock.currentTimeMillis) - started < 500) yield* appendTo("steady", ++n)
        const elapsed = (yield* Clock.currentTimeMillis) - started
        yield* appendTo("steadyend")
        const steady = (yield* heardUntil(heard, "steadyend")).filter((p) => p === "steady").length
        assert.isAtLeast(steady, 1)
        // At least 5 ms apart (4 here: a timer may fire within a millisecond of its time), the first at once.
        assert.isAtMost(steady, Math.floor(elapsed / 4) + 1)
      }))

    it.scoped("what a store marked in its last 5 ms is still notified when it closes", () =>
      Effect.gen(function* () {
        const { heard } = yield* listener
        // A store of its own, closed right after two appends: the second's NOTIFY waits out the spacing after the first's.
        yield* Effect.provide(Effect.zipRight(appendTo("lasta"), appendTo("lastb")), PgEventStore.layer)
        assert.deepStrictEqual(yield* heardUntil(heard, "lastb"), ["lasta", "lastb"])
      }))
  })
})
