/**
 * The transaction scope and batched writes, run against every store.
 *
 * @since 0.1.0
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as AggregateRoot from "../AggregateRoot.js"
import * as EventStore from "../EventStore.js"
import * as ExpectedVersion from "../ExpectedVersion.js"
import type { NewEvent } from "../RecordedEvent.js"
import { account, Deposited, Opened, type Raw, unique, Withdrawn } from "./fixtures.js"

class InsufficientFunds extends Data.TaggedError("InsufficientFunds")<{ readonly balance: number }> {}

const ev = (mark: string): NewEvent => ({ eventType: "test.marked", schemaVersion: 1, data: { mark } })

const Account = account(unique("tx"))

const open = (id: string, initial: number) =>
  EventStore.save(
    AggregateRoot.record(AggregateRoot.make(Account, id), Opened.make({ owner: id }), Deposited.make({ amount: initial }))
  )

const balance = (id: string) => Effect.map(EventStore.load(Account, id), (o) => Option.getOrThrow(o).state.balance)

/**
 * A transfer between two accounts: lock both streams in a consistent order,
 * check, record, save, all in one scope.
 *
 * @since 0.1.0
 * @category helpers
 */
export const transfer = (from: string, to: string, amount: number) =>
  EventStore.transaction(
    Effect.gen(function* () {
      const [first, second] = from <= to ? [from, to] : [to, from]
      yield* EventStore.loadForUpdate(Account, first)
      yield* EventStore.loadForUpdate(Account, second)
      const source = Option.getOrThrow(yield* EventStore.load(Account, from))
      const target = Option.getOrThrow(yield* EventStore.load(Account, to))
      if (source.state.balance < amount) return yield* new InsufficientFunds({ balance: source.state.balance })
      yield* EventStore.save(AggregateRoot.record(source, Withdrawn.make({ amount })))
      yield* EventStore.save(AggregateRoot.record(target, Deposited.make({ amount })))
    })
  )

/**
 * Registers the transaction suite (atomic scopes, row locks, batched writes).
 *
 * @since 0.1.0
 * @category suites
 */
export const transactionSuite = (name: string, storeLayer: Layer.Layer<EventStore.EventStore | Raw>) =>
  describe(`transaction scope and batches: ${name}`, () => {
    layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("a transfer moves money; an overdraft is refused and changes nothing", () =>
        Effect.gen(function* () {
          const [a, b] = [unique("alice"), unique("bob")]
          yield* open(a, 100)
          yield* open(b, 1)
          yield* transfer(a, b, 30)
          assert.strictEqual(yield* balance(a), 70)
          assert.strictEqual(yield* balance(b), 31)
          const refused = yield* Effect.flip(transfer(a, b, 1_000_000))
          assert.strictEqual(refused._tag, "InsufficientFunds")
          assert.strictEqual(yield* balance(a), 70)
          assert.strictEqual(yield* balance(b), 31)
        }))

      it.effect("50 concurrent transfers both ways: no deadlock, total conserved, never negative", () =>
        Effect.gen(function* () {
          const [a, b] = [unique("a"), unique("b")]
          yield* open(a, 100)
          yield* open(b, 100)
          const results = yield* Effect.all(
            Array.from({ length: 50 }, (_, i) =>
              Effect.either(i % 2 === 0 ? transfer(a, b, 7 + (i % 5)) : transfer(b, a, 9 + (i % 3)))
            ),
            { concurrency: "unbounded" }
          )
          for (const r of results) {
            if (Either.isLeft(r)) assert.strictEqual(r.left._tag, "InsufficientFunds")
          }
          assert.isAbove(results.filter(Either.isRight).length, 0)
          const [x, y] = [yield* balance(a), yield* balance(b)]
          assert.strictEqual(x + y, 200)
          assert.isAtLeast(x, 0)
          assert.isAtLeast(y, 0)
        }))

      it.effect("a failure, a defect and an interruption inside a scope roll back every write", () =>
        Effect.gen(function* () {
          const category = unique("rb")
          const writeTwo = (tag: string) =>
            Effect.gen(function* () {
              yield* EventStore.append(`${category}-${tag}1`, category, ExpectedVersion.NoStream, [ev("1")])
              yield* EventStore.append(`${category}-${tag}2`, category, ExpectedVersion.NoStream, [ev("1")])
            })
          const failure = yield* Effect.flip(EventStore.transaction(Effect.zipRight(writeTwo("f"), Effect.fail("boom"))))
          assert.strictEqual(failure, "boom")
          const defect = yield* Effect.exit(EventStore.transaction(Effect.zipRight(writeTwo("d"), Effect.die("crash"))))
          assert.isTrue(defect._tag === "Failure")
          // Interrupted after both writes (not before them, which would prove nothing).
          const written = yield* Deferred.make<void>()
          const fiber = yield* Effect.fork(
            EventStore.transaction(Effect.zipRight(writeTwo("i"), Effect.zipRight(Deferred.succeed(written, undefined), Effect.never)))
          )
          yield* Deferred.await(written)
          yield* Fiber.interrupt(fiber)
          for (const tag of ["f", "d", "i"]) {
            assert.strictEqual(yield* EventStore.streamVersion(`${category}-${tag}1`), 0, tag)
            assert.strictEqual(yield* EventStore.streamVersion(`${category}-${tag}2`), 0, tag)
          }
          // And a scope that succeeds commits both.
          yield* EventStore.transaction(writeTwo("ok"))
          assert.strictEqual(yield* EventStore.streamVersion(`${category}-ok2`), 1)
        }))

      it.effect("writes inside an open scope are invisible outside it until commit", () =>
        Effect.gen(function* () {
          const category = unique("iso")
          const s = `${category}-s`
          // The scope appends, signals, and commits only once the test has looked from outside.
          const appended = yield* Deferred.make<void>()
          const looked = yield* Deferred.make<void>()
          const fiber = yield* Effect.fork(
            EventStore.transaction(
              Effect.gen(function* () {
                yield* EventStore.append(s, category, ExpectedVersion.NoStream, [ev("1")])
                assert.strictEqual(yield* EventStore.streamVersion(s), 1)
                yield* Deferred.succeed(appended, undefined)
                yield* Deferred.await(looked)
              })
            )
          )
          yield* Deferred.await(appended)
          assert.strictEqual(yield* EventStore.streamVersion(s), 0)
          yield* Deferred.succeed(looked, undefined)
          yield* Fiber.join(fiber)
          assert.strictEqual(yield* EventStore.streamVersion(s), 1)
        }))

      it.effect("loadForUpdate holds other writers until the scope ends; it needs a scope", () =>
        Effect.gen(function* () {
          const id = unique("lk")
          yield* open(id, 10)
          const outside = yield* Effect.flip(EventStore.loadForUpdate(Account, id))
          assert.strictEqual(outside._tag, "InvalidInput")
          const missing = yield* EventStore.transaction(EventStore.loadForUpdate(Account, unique("none")))
          assert.isTrue(Option.isNone(missing))
          const order: Array<string> = []
          const locked = yield* Deferred.make<void>()
          const writerStarted = yield* Deferred.make<void>()
          const holder = yield* Effect.fork(
            EventStore.transaction(
              Effect.gen(function* () {
                yield* EventStore.loadForUpdate(Account, id)
                yield* Deferred.succeed(locked, undefined)
                // The writer has started: it gets time to (wrongly) append before this scope ends.
                yield* Deferred.await(writerStarted)
                yield* Effect.sleep("400 millis")
                order.push("holder commits")
              })
            )
          )
          yield* Deferred.await(locked)
          const writer = yield* Effect.fork(
            Effect.zipRight(
              Deferred.succeed(writerStarted, undefined),
              EventStore.append(`${Account.category}-${id}`, Account.category, ExpectedVersion.Any, [
                { eventType: `${Account.category}.deposited`, schemaVersion: 1, data: { amount: 1 } }
              ])
            ).pipe(Effect.tap(() => Effect.sync(() => order.push("writer appends"))))
          )
          yield* Fiber.join(holder)
          yield* Fiber.join(writer)
          assert.deepStrictEqual(order, ["holder commits", "writer appends"])
          assert.strictEqual(yield* balance(id), 11)
        }))

      it.effect("appendMany is all or nothing: one stale version writes nothing and names its stream", () =>
        Effect.gen(function* () {
          const category = unique("am")
          yield* EventStore.append(`${category}-b`, category, ExpectedVersion.NoStream, [ev("1"), ev("2")])
          const error = yield* Effect.flip(
            EventStore.appendMany([
              { streamId: `${category}-a`, category, expected: ExpectedVersion.NoStream, events: [ev("1")] },
              { streamId: `${category}-b`, category, expected: ExpectedVersion.Exact(1), events: [ev("3")] },
              { streamId: `${category}-c`, category, expected: ExpectedVersion.Any, events: [ev("1")] }
            ])
          )
          assert.strictEqual(error._tag, "ConcurrencyConflict")
          if (error._tag === "ConcurrencyConflict") {
            assert.strictEqual(error.streamId, `${category}-b`)
            assert.strictEqual(error.actual, 2)
          }
          assert.strictEqual(yield* EventStore.streamVersion(`${category}-a`), 0)
          assert.strictEqual(yield* EventStore.streamVersion(`${category}-b`), 2)
          assert.strictEqual(yield* EventStore.streamVersion(`${category}-c`), 0)
          // Inside a scope that catches the conflict: the same typed conflict, the batch leaves
          // nothing behind, and the scope goes on: what it writes next commits.
          const inScope = yield* EventStore.transaction(
            Effect.flip(
              EventStore.appendMany([
                { streamId: `${category}-d`, category, expected: ExpectedVersion.NoStream, events: [ev("1")] },
                { streamId: `${category}-b`, category, expected: ExpectedVersion.Exact(1), events: [ev("3")] }
              ])
            ).pipe(Effect.zipLeft(EventStore.append(`${category}-e`, category, ExpectedVersion.NoStream, [ev("1")])))
          )
          assert.strictEqual(inScope._tag, "ConcurrencyConflict")
          if (inScope._tag === "ConcurrencyConflict") {
            assert.strictEqual(inScope.streamId, `${category}-b`)
            assert.strictEqual(inScope.actual, 2)
          }
          assert.strictEqual(yield* EventStore.streamVersion(`${category}-d`), 0)
          assert.strictEqual(yield* EventStore.streamVersion(`${category}-e`), 1)
          const ok = yield* EventStore.appendMany([
            { streamId: `${category}-a`, category, expected: ExpectedVersion.NoStream, events: [ev("1"), ev("2")] },
            { streamId: `${category}-b`, category, expected: ExpectedVersion.Exact(2), events: [ev("3")] }
          ])
          assert.deepStrictEqual(
            ok.map((c) => [c.streamId, c.firstVersion, c.lastVersion]),
            [
              [`${category}-a`, 1, 2],
              [`${category}-b`, 3, 3]
            ]
          )
          assert.strictEqual(ok[0]!.transactionId, ok[1]!.transactionId)
        }))

      it.effect("batches over the same streams in opposite orders do not deadlock", () =>
        Effect.gen(function* () {
          const category = unique("dl")
          const streams = Array.from({ length: 6 }, (_, i) => `${category}-s${i}`)
          const batch = (order: ReadonlyArray<string>) =>
            EventStore.appendMany(order.map((streamId) => ({ streamId, category, expected: ExpectedVersion.Any, events: [ev("x")] })))
          yield* Effect.all(
            Array.from({ length: 20 }, (_, i) => batch(i % 2 === 0 ? streams : [...streams].reverse())),
            { concurrency: "unbounded" }
          ).pipe(Effect.timeout("30 seconds"))
          for (const s of streams) assert.strictEqual(yield* EventStore.streamVersion(s), 20)
        }))

      it.effect("saveMany saves several roots atomically", () =>
        Effect.gen(function* () {
          const [a, b] = [unique("sa"), unique("sb")]
          const ra = AggregateRoot.record(AggregateRoot.make(Account, a), Opened.make({ owner: "a" }))
          const rb = AggregateRoot.record(AggregateRoot.make(Account, b), Opened.make({ owner: "b" }), Deposited.make({ amount: 3 }))
          const [sa, sb] = yield* EventStore.saveMany([ra, rb])
          assert.strictEqual(sa.version, 1)
          assert.strictEqual(sb.version, 2)
          const stale = AggregateRoot.record(rb, Deposited.make({ amount: 1 }))
          const fresh = AggregateRoot.record(sa, Deposited.make({ amount: 1 }))
          const error = yield* Effect.flip(EventStore.saveMany([fresh, stale]))
          assert.strictEqual(error._tag === "ConcurrencyConflict" && error.streamId, `${Account.category}-${b}`)
          assert.strictEqual(yield* EventStore.streamVersion(`${Account.category}-${a}`), 1)
        }))
    })
  })
