import { assert, describe, it } from "@effect/vitest"
import { commandHandlerSuite } from "@mire/core/conformance"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"
import * as TestContext from "effect/TestContext"
import * as CommandHandler from "../src/CommandHandler.js"
import * as CommandLog from "../src/CommandLog.js"
import * as EventStore from "../src/EventStore.js"
import { ConcurrencyConflict, InvalidInput } from "../src/EventStoreError.js"
import * as InMemory from "../src/InMemory.js"
import { aggregateIdOf } from "../src/RecordedEvent.js"
import * as StreamId from "../src/StreamId.js"

commandHandlerSuite("in-memory", InMemory.layer)
commandHandlerSuite("in-memory (event store + command log only)", CommandLog.layerMemory.pipe(Layer.provideMerge(EventStore.layerMemory)))

const conflict = new ConcurrencyConflict({ streamId: "s-1", expected: "v1", actual: 2 })

describe("CommandHandler (pure parts)", () => {
  it("aggregateIdOf strips the category prefix, and only it", () => {
    assert.strictEqual(aggregateIdOf("account-42", "account"), "42")
    assert.strictEqual(aggregateIdOf("account-a-b", "account"), "a-b")
    assert.strictEqual(aggregateIdOf("accounts-1", "account"), "accounts-1")
    assert.strictEqual(aggregateIdOf("account-", "account"), "account-")
    assert.strictEqual(aggregateIdOf("ledger", "account"), "ledger")
  })

  it("invalidCommandId accepts ASCII tokens of 1-255 characters only", () => {
    assert.isUndefined(CommandHandler.invalidCommandId(crypto.randomUUID()))
    assert.isUndefined(CommandHandler.invalidCommandId("order:42/pay@v2"))
    for (const bad of ["", " ", "a b", "ü", "x".repeat(256), 42, undefined]) {
      const fault = CommandHandler.invalidCommandId(bad)
      assert.instanceOf(fault, InvalidInput, JSON.stringify(bad))
      assert.strictEqual(fault?.field, "commandId")
    }
  })

  it("repeated: the first outcome for the same stream, InvalidInput for another", () => {
    const record: CommandLog.CommandRecord = {
      commandId: "c",
      streamId: StreamId.fromStored("account-1"),
      firstVersion: 2,
      lastVersion: 3,
      firstPosition: 10n,
      lastPosition: 11n,
      transactionId: 7n,
      eventIds: ["e1", "e2"],
      recordedAt: new Date(0)
    }
    assert.deepStrictEqual(CommandHandler.repeated(record, "account-1"), Either.right({ _tag: "Repeated", record }))
    const other = CommandHandler.repeated(record, "account-2")
    assert.isTrue(Either.isLeft(other) && other.left.field === "commandId" && /account-1/.test(other.left.reason))
  })

  it("recordOf: versions, positions and ids of what an append wrote", () => {
    const streamId = StreamId.fromStored("account-1")
    assert.isUndefined(CommandHandler.recordOf("c", streamId, []))
    const written = [
      { eventId: "a", streamVersion: 4, globalPosition: 20n, transactionId: 9n },
      { eventId: "b", streamVersion: 5, globalPosition: 21n, transactionId: 9n }
    ]
    assert.deepStrictEqual(CommandHandler.recordOf("c", streamId, written), {
      commandId: "c",
      streamId,
      firstVersion: 4,
      lastVersion: 5,
      firstPosition: 20n,
      lastPosition: 21n,
      transactionId: 9n,
      eventIds: ["a", "b"]
    })
  })

  it.effect("retryConflicts retries only conflicts, and the default retry is bounded (5 attempts)", () =>
    Effect.gen(function* () {
      let attempts = 0
      const alwaysConflicts = Effect.suspend(() => {
        attempts++
        return Effect.fail(conflict)
      })
      const fiber = yield* Effect.fork(Effect.flip(CommandHandler.retryConflicts(alwaysConflicts, CommandHandler.defaultRetry)))
      // Jittered backoff from 10 ms, 4 retries: well within a second of test time.
      yield* TestClock.adjust("1 second")
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error, conflict)
      assert.strictEqual(attempts, 5)

      let others = 0
      const refused = yield* Effect.flip(
        CommandHandler.retryConflicts(
          Effect.suspend(() => {
            others++
            return Effect.fail("domain error" as const)
          }),
          CommandHandler.defaultRetry
        )
      )
      assert.strictEqual(refused, "domain error")
      assert.strictEqual(others, 1)

      let flaky = 0
      const succeeds = yield* Effect.fork(
        CommandHandler.retryConflicts(
          Effect.suspend(() => (++flaky < 3 ? Effect.fail(conflict) : Effect.succeed("ok"))),
          CommandHandler.defaultRetry
        )
      )
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Fiber.join(succeeds), "ok")
      assert.strictEqual(flaky, 3)
    }).pipe(Effect.provide(TestContext.TestContext)))
})
