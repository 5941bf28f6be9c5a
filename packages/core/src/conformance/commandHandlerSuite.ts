/**
 * Command handlers and their command log, run against every store: decide,
 * retry on conflicts, and idempotency by command id (also under races).
 *
 * @since 0.2.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as CommandHandler from "../CommandHandler.js"
import * as CommandLog from "../CommandLog.js"
import * as EventStore from "../EventStore.js"
import { account, type AccountEvent, type AccountState, Deposited, Opened, unique, Withdrawn } from "./fixtures.js"

class NotOpen extends Data.TaggedError("NotOpen")<{}> {}
class InsufficientFunds extends Data.TaggedError("InsufficientFunds")<{ readonly balance: number }> {}

type Command =
  | { readonly _tag: "Open"; readonly owner: string }
  | { readonly _tag: "Deposit"; readonly amount: number }
  | { readonly _tag: "Withdraw"; readonly amount: number }
  | { readonly _tag: "Touch" }

const decideAccount = (
  state: AccountState,
  command: Command
): Effect.Effect<ReadonlyArray<AccountEvent>, NotOpen | InsufficientFunds> => {
  switch (command._tag) {
    case "Open":
      return Effect.succeed(state.open ? [] : [Opened.make({ owner: command.owner })])
    case "Deposit":
      return state.open ? Effect.succeed([Deposited.make({ amount: command.amount })]) : Effect.fail(new NotOpen())
    case "Withdraw":
      if (!state.open) return Effect.fail(new NotOpen())
      return command.amount > state.balance
        ? Effect.fail(new InsufficientFunds({ balance: state.balance }))
        : Effect.succeed([Withdrawn.make({ amount: command.amount })])
    case "Touch":
      return Effect.succeed([])
  }
}

const open = (owner: string): Command => ({ _tag: "Open", owner })
const deposit = (amount: number): Command => ({ _tag: "Deposit", amount })
const withdraw = (amount: number): Command => ({ _tag: "Withdraw", amount })

/**
 * Registers the command handler suite.
 *
 * @since 0.2.0
 * @category suites
 */
export const commandHandlerSuite = (
  name: string,
  storeLayer: Layer.Layer<EventStore.EventStore | CommandLog.CommandLog>
) =>
  describe(`command handlers: ${name}`, () => {
    const Account = account(unique("cmd"))
    const handle = CommandHandler.make({ aggregate: Account, decide: decideAccount })
    const events = (id: string) =>
      Effect.map(Stream.runCollect(EventStore.readStream(`${Account.category}-${id}`)), Chunk.toReadonlyArray)

    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("decides and saves; recorded events carry the aggregate id", () =>
        Effect.gen(function* () {
          const id = unique("a-")
          const opened = yield* handle(id, open("Ada"))
          assert.strictEqual(opened._tag, "Decided")
          if (opened._tag !== "Decided") return
          assert.strictEqual(opened.root.version, 1)
          assert.strictEqual(opened.root.pending.length, 0)
          assert.isTrue(Option.isNone(opened.record))
          const deposited = yield* handle(id, deposit(30), { metadata: { correlationId: "corr-1" } })
          assert.strictEqual(deposited._tag === "Decided" ? deposited.root.state.balance : -1, 30)
          const stored = yield* events(id)
          assert.deepStrictEqual(
            stored.map((e) => [e.streamVersion, e.aggregateId]),
            [
              [1, id],
              [2, id]
            ]
          )
          assert.strictEqual(stored[1]!.metadata.correlationId, "corr-1")
          const category = yield* Stream.runCollect(EventStore.readCategory(Account.category))
          assert.isTrue(Chunk.every(category, (e) => `${e.category}-${e.aggregateId}` === e.streamId))
        }))

      it.effect("a domain error is typed and appends nothing; an empty decision appends nothing", () =>
        Effect.gen(function* () {
          const id = unique("r-")
          const refused = yield* Effect.flip(handle(id, deposit(5)))
          assert.strictEqual(refused._tag, "NotOpen")
          yield* handle(id, open("Bob"))
          const overdraft = yield* Effect.flip(handle(id, withdraw(10)))
          assert.isTrue(overdraft instanceof InsufficientFunds && overdraft.balance === 0)
          const touched = yield* handle(id, { _tag: "Touch" })
          assert.strictEqual(touched._tag === "Decided" ? touched.events.length : -1, 0)
          const again = yield* handle(id, open("Bob"), { commandId: unique("empty-") })
          assert.isTrue(again._tag === "Decided" && Option.isNone(again.record) && again.root.version === 1)
          assert.strictEqual((yield* events(id)).length, 1)
        }))

      it.effect("a conflict is retried against the fresh state; without retries it surfaces typed", () =>
        Effect.gen(function* () {
          const id = unique("c-")
          yield* handle(id, open("Cy"))
          // The first decision waits until another writer has saved: its save must conflict.
          const decided = yield* Deferred.make<void>()
          const other = yield* Deferred.make<void>()
          let calls = 0
          const slow = (retry: Schedule.Schedule<unknown, unknown> | undefined) =>
            CommandHandler.make({
              aggregate: Account,
              retry,
              decide: (state: AccountState, amount: number) =>
                Effect.gen(function* () {
                  calls++
                  if (calls === 1) {
                    yield* Deferred.succeed(decided, undefined)
                    yield* Deferred.await(other)
                  }
                  return [Deposited.make({ amount: amount + state.balance })]
                })
            })
          const fiber = yield* Effect.fork(slow(undefined)(id, 1))
          yield* Deferred.await(decided)
          yield* handle(id, deposit(10))
          yield* Deferred.succeed(other, undefined)
          const outcome = yield* Fiber.join(fiber)
          assert.strictEqual(calls, 2)
          // Decided again on the fresh state (balance 10): deposits 11.
          assert.strictEqual(outcome._tag === "Decided" ? outcome.root.state.balance : -1, 21)
          assert.strictEqual(outcome._tag === "Decided" ? outcome.root.version : -1, 3)

          calls = 0
          const decided2 = yield* Deferred.make<void>()
          const other2 = yield* Deferred.make<void>()
          const noRetry = CommandHandler.make({
            aggregate: Account,
            retry: Schedule.stop,
            decide: (_: AccountState, amount: number) =>
              Effect.zipRight(
                Effect.zipRight(Deferred.succeed(decided2, undefined), Deferred.await(other2)),
                Effect.succeed([Deposited.make({ amount })])
              )
          })
          const lost = yield* Effect.fork(Effect.flip(noRetry(id, 1)))
          yield* Deferred.await(decided2)
          yield* handle(id, deposit(10))
          yield* Deferred.succeed(other2, undefined)
          const conflict = yield* Fiber.join(lost)
          assert.strictEqual(conflict._tag, "ConcurrencyConflict")
          assert.strictEqual(conflict._tag === "ConcurrencyConflict" ? conflict.actual : -1, 4)
          assert.strictEqual((yield* events(id)).length, 4)
        }))

      it.effect("a repeated command id returns the first outcome without deciding or appending", () =>
        Effect.gen(function* () {
          const id = unique("i-")
          const commandId = crypto.randomUUID()
          yield* handle(id, open("Di"))
          let decisions = 0
          const counted = CommandHandler.make({
            aggregate: Account,
            decide: (state: AccountState, command: Command) => Effect.suspend(() => {
              decisions++
              return decideAccount(state, command)
            })
          })
          const first = yield* counted(id, deposit(25), { commandId })
          assert.strictEqual(first._tag, "Decided")
          const record = first._tag === "Decided" ? Option.getOrThrow(first.record) : assert.fail("not decided")
          const written = yield* events(id)
          assert.deepStrictEqual(record.eventIds, [written[1]!.eventId])
          assert.strictEqual(record.streamId, `${Account.category}-${id}`)
          assert.deepStrictEqual([record.firstVersion, record.lastVersion], [2, 2])
          assert.strictEqual(record.firstPosition, written[1]!.globalPosition)
          assert.strictEqual(record.transactionId, written[1]!.transactionId)
          // Again, even with another command body: the first outcome, nothing decided or appended.
          const second = yield* counted(id, deposit(999), { commandId })
          assert.strictEqual(second._tag, "Repeated")
          assert.deepStrictEqual(second._tag === "Repeated" ? second.record : undefined, record)
          assert.strictEqual(decisions, 1)
          assert.strictEqual((yield* events(id)).length, 2)
          const found = yield* Effect.flatMap(CommandLog.CommandLog, (log) => log.find(commandId))
          assert.deepStrictEqual(Option.getOrThrow(found), record)
          // Several events in one command: one record with every id, in order.
          const many = CommandHandler.make({
            aggregate: Account,
            decide: (_: AccountState, n: number) => Effect.succeed(Array.from({ length: n }, () => Deposited.make({ amount: 1 })))
          })
          const three = yield* many(id, 3, { commandId: `${commandId}-3` })
          const r3 = three._tag === "Decided" ? Option.getOrThrow(three.record) : assert.fail("not decided")
          const all = yield* events(id)
          assert.deepStrictEqual(r3.eventIds, all.slice(2).map((e) => e.eventId))
          assert.deepStrictEqual([r3.firstVersion, r3.lastVersion, r3.lastPosition], [3, 5, all[4]!.globalPosition])
        }))

      it.effect("a command id used for another aggregate is InvalidInput and writes nothing", () =>
        Effect.gen(function* () {
          const [a, b] = [unique("x-"), unique("y-")]
          yield* handle(a, open("Ed"))
          yield* handle(b, open("Flo"))
          const commandId = unique("cid-")
          yield* handle(a, deposit(1), { commandId })
          const refused = yield* Effect.flip(handle(b, deposit(1), { commandId }))
          assert.strictEqual(refused._tag, "InvalidInput")
          assert.strictEqual(refused._tag === "InvalidInput" ? refused.field : "", "commandId")
          assert.strictEqual((yield* events(b)).length, 1)
        }))

      it.effect("a refused command is not recorded: the same command id is decided again", () =>
        Effect.gen(function* () {
          const id = unique("f-")
          const commandId = unique("cid-")
          yield* handle(id, open("Gus"))
          const refused = yield* Effect.flip(handle(id, withdraw(50), { commandId }))
          assert.strictEqual(refused._tag, "InsufficientFunds")
          const logged = yield* Effect.flatMap(CommandLog.CommandLog, (log) => log.find(commandId))
          assert.isTrue(Option.isNone(logged))
          yield* handle(id, deposit(80))
          const accepted = yield* handle(id, withdraw(50), { commandId })
          assert.strictEqual(accepted._tag === "Decided" ? accepted.root.state.balance : -1, 30)
          const repeated = yield* handle(id, withdraw(50), { commandId })
          assert.strictEqual(repeated._tag, "Repeated")
        }))

      it.effect("a bad command id or aggregate id is InvalidInput and changes nothing", () =>
        Effect.gen(function* () {
          const id = unique("v-")
          for (const commandId of ["", "a b", "x".repeat(256), "é"]) {
            const error = yield* Effect.flip(handle(id, open("Hal"), { commandId }))
            assert.strictEqual(error._tag === "InvalidInput" ? error.field : "", "commandId", JSON.stringify(commandId))
          }
          const badId = yield* Effect.flip(handle("no spaces", open("Hal"), { commandId: "ok" }))
          assert.strictEqual(badId._tag, "InvalidInput")
          assert.strictEqual((yield* events(id)).length, 0)
          assert.isTrue(Option.isNone(yield* Effect.flatMap(CommandLog.CommandLog, (log) => log.find("ok"))))
        }))

      it.effect("concurrent calls with one command id: exactly one appends", () =>
        Effect.gen(function* () {
          const id = unique("k-")
          const others = Array.from({ length: 4 }, () => unique("o-"))
          yield* handle(id, open("Ida"))
          for (const other of others) yield* handle(other, open("Jo"))
          const commandId = crypto.randomUUID()
          const sameStream = Array.from({ length: 8 }, () => Effect.either(handle(id, deposit(7), { commandId })))
          const otherStreams = others.map((other) => Effect.either(handle(other, deposit(7), { commandId })))
          const results = yield* Effect.all([...sameStream, ...otherStreams], { concurrency: "unbounded" })
          const decided = results.filter((r) => Either.isRight(r) && r.right._tag === "Decided")
          assert.strictEqual(decided.length, 1)
          const winner = decided[0]!
          const winningStream = Either.isRight(winner) && winner.right._tag === "Decided" ? winner.right.root.streamId : ""
          let appended = 0
          for (const stream of [id, ...others]) appended += (yield* events(stream)).length - 1
          assert.strictEqual(appended, 1)
          for (const r of results) {
            if (Either.isLeft(r)) {
              // A loser on another stream than the winner's: the id belongs to the winner's stream.
              assert.strictEqual(r.left._tag, "InvalidInput")
            } else if (r.right._tag === "Repeated") {
              assert.strictEqual(r.right.record.streamId, winningStream)
            }
          }
        }))

      it.effect("a command id held by an open transaction: a second call waits for it, then yields to it", () =>
        Effect.gen(function* () {
          const [a, b] = [unique("h-"), unique("w-")]
          yield* handle(a, open("Kim"))
          yield* handle(b, open("Lee"))
          const commandId = unique("held-")
          const recorded = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          // The first call's record stays uncommitted until the test releases its transaction.
          const first = yield* Effect.fork(
            EventStore.transaction(
              Effect.zipLeft(
                handle(a, deposit(3), { commandId }),
                Effect.zipRight(Deferred.succeed(recorded, undefined), Deferred.await(release))
              )
            )
          )
          yield* Deferred.await(recorded)
          const sameStream = yield* Effect.fork(Effect.either(handle(a, deposit(4), { commandId })))
          const otherStream = yield* Effect.fork(Effect.either(handle(b, deposit(4), { commandId })))
          yield* Effect.sleep("200 millis")
          assert.isTrue(Option.isNone(yield* Fiber.poll(sameStream)), "the same stream's call waits")
          assert.isTrue(Option.isNone(yield* Fiber.poll(otherStream)), "another stream's call waits")
          yield* Deferred.succeed(release, undefined)
          const won = yield* Fiber.join(first)
          assert.strictEqual(won._tag, "Decided")
          const same = yield* Fiber.join(sameStream)
          assert.strictEqual(Either.isRight(same) ? same.right._tag : same.left._tag, "Repeated")
          const other = yield* Fiber.join(otherStream)
          assert.strictEqual(Either.isRight(other) ? other.right._tag : other.left._tag, "InvalidInput")
          assert.deepStrictEqual(
            (yield* events(a)).map((e) => e.data),
            [{ owner: "Kim" }, { amount: 3 }]
          )
          assert.strictEqual((yield* events(b)).length, 1)
        }))

      it.effect("a rolled-back command is not recorded: the id is free again", () =>
        Effect.gen(function* () {
          const id = unique("rb-")
          const commandId = unique("rb-")
          yield* handle(id, open("Max"))
          const rolledBack = yield* Effect.flip(
            EventStore.transaction(Effect.zipRight(handle(id, deposit(5), { commandId }), Effect.fail("abort" as const)))
          )
          assert.strictEqual(rolledBack, "abort")
          assert.isTrue(Option.isNone(yield* Effect.flatMap(CommandLog.CommandLog, (log) => log.find(commandId))))
          const again = yield* handle(id, deposit(6), { commandId })
          assert.strictEqual(again._tag === "Decided" ? again.root.state.balance : -1, 6)
        }))
    })
  })
