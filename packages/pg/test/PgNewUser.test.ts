/**
 * The errors a new user meets, against the real server: a wrong database
 * name, a closed port, a refused login, tables not migrated yet.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as EventStore from "@mire/core/EventStore"
import * as ExpectedVersion from "@mire/core/ExpectedVersion"
import * as Subscription from "@mire/core/Subscription"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { createServer } from "node:net"
import { toStoreError } from "../src/internal/errors.js"
import * as PgMigrations from "../src/PgMigrations.js"
import * as PgStore from "../src/PgStore.js"
import { clientLayer, database, serverUrl } from "./utils.js"

const withUrl = (f: (url: URL) => void): string => {
  const url = new URL(serverUrl())
  f(url)
  return url.toString()
}

/** A port on 127.0.0.1 that nothing listens on (bound, then closed). */
const closedPort = Effect.promise(
  () =>
    new Promise<number>((resolve, reject) => {
      const server = createServer()
      server.on("error", reject)
      server.listen(0, "127.0.0.1", () => {
        const address = server.address()
        const port = typeof address === "object" && address !== null ? address.port : 0
        server.close(() => resolve(port))
      })
    })
)

/** Builds the store layer on `url` and returns its failure. */
const connectFailure = (url: string) =>
  Layer.build(PgStore.layerClient({ url: Redacted.make(url), connectTimeout: "10 seconds" })).pipe(
    Effect.scoped,
    Effect.flip
  )

const event = { eventType: "NewUser.Tried", schemaVersion: 1, data: {} }

describe("connection failures are StoreError Connection, the server's reason first", () => {
  it.effect("an unknown database name", () =>
    Effect.gen(function* () {
      const error = yield* connectFailure(withUrl((u) => (u.pathname = "/mire_no_such_database")))
      assert.strictEqual(error._tag, "StoreError")
      assert.strictEqual(error.kind, "Connection")
      assert.strictEqual(error.operation, "connect")
      assert.match(error.message, /^database "mire_no_such_database" does not exist/)
    })
  )

  it.effect("a closed port on 127.0.0.1", () =>
    Effect.gen(function* () {
      const port = yield* closedPort
      const error = yield* connectFailure(
        withUrl((u) => {
          u.hostname = "127.0.0.1"
          u.port = String(port)
        })
      )
      assert.strictEqual(error.kind, "Connection")
      assert.match(error.message, new RegExp(`^connect ECONNREFUSED 127\\.0\\.0\\.1:${port}`))
    })
  )

  it.effect("a closed port on localhost", () =>
    Effect.gen(function* () {
      const port = yield* closedPort
      const error = yield* connectFailure(
        withUrl((u) => {
          u.hostname = "localhost"
          u.port = String(port)
        })
      )
      assert.strictEqual(error.kind, "Connection")
      assert.match(error.message, new RegExp(`^connect ECONNREFUSED \\S+:${port} \\(connect failed: Connection\\)$`))
    })
  )

  it.effect("a refused login (wrong password, or no such role on a trusting server)", () =>
    Effect.gen(function* () {
      const error = yield* connectFailure(
        withUrl((u) => {
          u.username = "mire_nobody"
          u.password = "wrong"
        })
      )
      assert.strictEqual(error.kind, "Connection")
      assert.match(
        error.message,
        /^(password authentication failed for user "mire_nobody"|role "mire_nobody" does not exist)/
      )
    })
  )

  it.effect("clientConfig maps the same failure", () =>
    Effect.gen(function* () {
      const url = withUrl((u) => (u.pathname = "/mire_no_such_database"))
      const error = yield* Layer.build(PgStore.clientConfig({ url: Config.succeed(Redacted.make(url)) })).pipe(
        Effect.scoped,
        Effect.flip
      )
      assert.strictEqual(error._tag, "StoreError")
      assert.match(error.message, /^database "mire_no_such_database" does not exist/)
    })
  )
})

describe("an unmigrated database", () => {
  layer(PgStore.layer.pipe(Layer.provideMerge(clientLayer()), Layer.provideMerge(database)), {
    timeout: "120 seconds",
    excludeTestServices: true
  })((it) => {
    it.effect("an append says to run the migrations (NotMigrated)", () =>
      Effect.gen(function* () {
        const error = yield* Effect.flip(EventStore.append("newuser-1", "newuser", ExpectedVersion.NoStream, [event]))
        assert.strictEqual(error._tag, "StoreError")
        if (error._tag !== "StoreError") return
        assert.strictEqual(error.kind, "NotMigrated")
        assert.include(error.message, "`mire migrate`")
        assert.include(error.message, "PgMigrations.migrate()")
        assert.match(error.message, /^append failed: mire's schema is not installed \(function public\.mire_append_stream\(/)
      })
    )

    it.scoped("a subscription says the same", () =>
      Effect.gen(function* () {
        const error = yield* Effect.flip(Subscription.make({ subscriptionId: "newuser-sub" }))
        assert.strictEqual(error._tag, "StoreError")
        if (error._tag !== "StoreError") return
        assert.strictEqual(error.kind, "NotMigrated")
        assert.include(error.message, "`mire migrate`")
      })
    )

    it.effect("a missing mire function (a partial schema) is NotMigrated too; a user's own missing table is not", () =>
      Effect.gen(function* () {
        const sql = yield* PgClient.PgClient
        assert.deepStrictEqual(
          (yield* PgMigrations.pending).map((m) => m.name).slice(0, 1),
          ["0001_events"]
        )
        yield* PgMigrations.migrate()
        assert.deepStrictEqual(yield* PgMigrations.pending, [])
        // A single append goes out as `mire_append_each`, then alone as `mire_append_stream` when the server refuses it.
        yield* sql.unsafe("DROP FUNCTION mire_append_stream")
        yield* sql.unsafe("DROP FUNCTION mire_append_each")
        const error = yield* Effect.flip(EventStore.append("newuser-2", "newuser", ExpectedVersion.NoStream, [event]))
        assert.strictEqual(error._tag, "StoreError")
        if (error._tag !== "StoreError") return
        assert.strictEqual(error.kind, "NotMigrated")
        assert.include(error.message, "mire_append_stream")
        const own = yield* Effect.flip(sql`SELECT * FROM orders_of_the_user`)
        assert.strictEqual(toStoreError("read")(own).kind, "Other")
        const ownFunction = yield* Effect.flip(sql`SELECT mirror_of_the_user()`)
        assert.strictEqual(toStoreError("read")(ownFunction).kind, "Other")
      })
    )
  })
})
