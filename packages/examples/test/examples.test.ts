/**
 * Smoke tests: every example runs to the end against a fresh migrated
 * database and prints the lines its story promises.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { EventStore, InMemory } from "@mire/core"
import { PgStore } from "@mire/pg"
import { Effect, Layer } from "effect"
import type * as Console from "effect/Console"
import { migratedLayer } from "../../pg/test/utils.js"
import * as bank_account from "../src/bank_account.js"
import * as batched_write from "../src/batched_write.js"
import * as commands from "../src/commands.js"
import * as concurrency from "../src/concurrency.js"
import { examples } from "../src/index.js"
import * as multi_replica from "../src/multi_replica.js"
import * as projection from "../src/projection.js"
import * as saga from "../src/saga.js"
import * as scale_out from "../src/scale_out.js"
import * as snapshot from "../src/snapshot.js"
import * as transaction_scope from "../src/transaction_scope.js"

/** Runs a program with `Console.log` recorded instead of printed; returns the lines. */
const output = <A, E, R>(program: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const lines: Array<string> = []
    const base = yield* Effect.console
    const recording: Console.Console = {
      ...base,
      log: (...args) => Effect.sync(() => void lines.push(args.map(String).join(" ")))
    }
    yield* Effect.withConsole(program, recording)
    return lines
  })

const line = (lines: ReadonlyArray<string>, pattern: RegExp): RegExpMatchArray => {
  for (const l of lines) {
    const match = l.match(pattern)
    if (match !== null) return match
  }
  return assert.fail(`no line matches ${pattern}:\n${lines.join("\n")}`)
}

/** The lines after the one matching `pattern`, up to the next unindented line. */
const block = (lines: ReadonlyArray<string>, pattern: RegExp): ReadonlyArray<string> => {
  const start = lines.findIndex((l) => pattern.test(l))
  if (start < 0) return assert.fail(`no line matches ${pattern}:\n${lines.join("\n")}`)
  const rest = lines.slice(start + 1)
  const end = rest.findIndex((l) => !l.startsWith("  "))
  return end < 0 ? rest : rest.slice(0, end)
}

/** What the saga example must print, on any store. */
const sagaStory = (lines: ReadonlyArray<string>) => {
  line(lines, /^payment service: ada-1 \$80 charged \(ch_ada-1\)$/)
  line(lines, /^payment service: grace-1 \$2400 declined, over the \$1000 card limit$/)
  line(lines, /^outbox: warehouse\.pick .* \(key saga:fulfilment_\w+:ada-1:ship:0\)$/)
  assert.deepStrictEqual(block(lines, /^ada-1: completed$/), [
    "  reserve-stock: completed",
    "  charge-payment: awaiting",
    "  charge-payment: completed",
    "  ship: awaiting",
    "  ship: completed"
  ])
  assert.deepStrictEqual(
    block(lines, /^grace-1: failed \(step charge-payment got an error response payment_\w+\.declined\)$/).map((l) =>
      l.replace(/payment_\w+\./, "payment.")
    ),
    [
      "  reserve-stock: completed",
      "  charge-payment: awaiting",
      "  charge-payment: error-response: payment.declined",
      "  reserve-stock: compensated"
    ]
  )
  line(lines, /^ {2}kettle: Reserved 2 \(ada-1\); 2 reserved now$/)
  line(lines, /^ {2}piano: Reserved 1 \(grace-1\), Released 1 \(grace-1\); 0 reserved now$/)
}

describe("examples", () => {
  it("every runnable example has a smoke test here", () => {
    assert.deepStrictEqual(Object.keys(examples).sort(), [
      "bank_account",
      "batched_write",
      "commands",
      "concurrency",
      "multi_replica",
      "projection",
      "saga",
      "scale_out",
      "snapshot",
      "telemetry",
      "transaction_scope"
    ])
  })

  // Every PostgreSQL service (event store, subscriptions, leases, sagas) on a fresh, migrated database.
  const pgLayer = PgStore.layer.pipe(Layer.provideMerge(migratedLayer()))

  layer(pgLayer, { excludeTestServices: true, timeout: "120 seconds" })("on PostgreSQL", (it) => {
    it.effect("bank_account: open, deposit, load again", () =>
      Effect.gen(function* () {
        const lines = yield* output(bank_account.program)
        line(lines, /^recorded 2 events; balance in memory: \$100$/)
        line(lines, /^reloaded from the log: owner=Ada, balance=\$100, version 2$/)
      })
    )

    it.effect("commands: refused commands record nothing", () =>
      Effect.gen(function* () {
        const lines = yield* output(commands.program)
        line(lines, /^deposit \$10 before opening: refused \(account is not open\)$/)
        line(lines, /^withdraw \$500: refused \(insufficient funds: balance \$70, requested \$500\)$/)
        line(lines, /^deposit \$5 after closing: refused \(account is closed\)$/)
        line(lines, /^withdraw \$1: caught AccountNotOpen \(closed\)$/)
        line(lines, /^final: closed, balance \$70, 4 events in the log/)
      })
    )

    it.effect("concurrency: $100 after 2 × 50 racing deposits, with conflicts retried", () =>
      Effect.gen(function* () {
        const lines = yield* output(concurrency.program)
        line(lines, /^final balance: \$100 \(100 deposits, version 100\)$/)
        const [, conflicts] = line(lines, /^conflicts observed: (\d+)/)
        assert.isAbove(Number(conflicts), 0)
      })
    )

    it.effect("snapshot: loadSnapshotted uses the snapshot and agrees with load", () =>
      Effect.gen(function* () {
        const lines = yield* output(snapshot.program)
        line(lines, /^wrote 2010 events .* latest at v2000\)$/)
        line(lines, /^loadSnapshotted: .*snapshot at v2000 \+ 10 events; 5 of 5 loads hit the snapshot\)$/)
        line(lines, /^same state either way: .* version 2010$/)
      })
    )

    it.effect("transaction_scope: a transfer commits, an overdraft leaves both accounts unchanged", () =>
      Effect.gen(function* () {
        const lines = yield* output(transaction_scope.program)
        line(lines, /^after \$30 transfer: Alice=70, Bob=30, sum 100$/)
        line(lines, /^rejected: insufficient funds in \S+: balance 70, transfer 1000000$/)
        line(lines, /^after rejected transfer: Alice=70, Bob=30, sum 100 \(unchanged\)$/)
        line(lines, /^after 20 concurrent \$1 transfers in both directions: Alice=70, Bob=30, sum 100$/)
      })
    )

    it.effect("batched_write: three ways, every event in the log", () =>
      Effect.gen(function* () {
        const lines = yield* output(batched_write.program)
        line(lines, /^one save per event +\d+\.\d ms/)
        line(lines, /^record all, then one save +\d+\.\d ms/)
        line(lines, /^saveMany across 10 streams +\d+\.\d ms/)
        line(lines, /^in the log: 3000 events in 12 streams$/)
      })
    )

    it.effect("projection: the runner keeps both read models current; a replay changes nothing", () =>
      Effect.gen(function* () {
        const lines = yield* output(projection.program)
        line(lines, /^both projections caught up$/)
        line(lines, /^ {2}Ada: balance \$120, version 4$/)
        line(lines, /^ {2}Grace: balance \$75, version 2$/)
        line(lines, /^ {2}Linus: balance \$0, version 1$/)
        line(lines, /^account_totals \(transactional, exactly once\): 3 accounts opened, \$225 deposited, \$30 withdrawn$/)
        line(lines, /^totals agree with account_balances: 3 accounts, \$195 in all$/)
        line(lines, /^replayed 7 events through the balances handler again: balances unchanged$/)
      })
    )

    it.effect("multi_replica: the leader handles 5, is killed, the follower takes over (fence 2) and handles 5", () =>
      Effect.gen(function* () {
        const lines = yield* output(multi_replica.program)
        const [, first] = line(lines, /^lease holder: (replica-[AB]) \(fence_token=1\)$/)
        const [, next] = line(lines, /^lease holder after failover: (replica-[AB]) \(fence_token=2\)$/)
        assert.notStrictEqual(next, first)
        line(lines, /^ {2}total events processed: A=5, B=5 \(sum 10\)$/)
        line(lines, new RegExp(`^ {2}first 5 on ${first} \\(fence_token=1\\), next 5 on ${next} \\(fence_token=2\\)$`))
      })
    )

    it.effect("scale_out: 3 replicas lead 2 shards each; one stops, the others lead 3 each; the read model is complete", () =>
      Effect.gen(function* () {
        const lines = yield* output(scale_out.program)
        assert.deepStrictEqual(block(lines, /^--- replica-A alone, 6 shards ---$/).map((l) => l.match(/leads (\d)/)?.[1]), ["6"])
        assert.deepStrictEqual(block(lines, /^--- 3 replicas, 6 shards ---$/).map((l) => l.match(/leads (\d)/)?.[1]), ["2", "2", "2"])
        assert.deepStrictEqual(block(lines, /^--- 2 replicas, 6 shards ---$/).map((l) => l.match(/leads (\d)/)?.[1]), ["3", "3"])
        line(lines, /^30 more handled: A=\d+, B=\d+, C=0$/)
        line(lines, /^read model: 60 orders, complete$/)
      })
    )

    it.effect("saga: one order completes, the declined one releases its stock", () =>
      Effect.gen(function* () {
        sagaStory(yield* output(saga.program))
      })
    )
  })

  layer(EventStore.layerMemory, { excludeTestServices: true })("on the in-memory store", (it) => {
    it.effect("bank_account and commands run unchanged", () =>
      Effect.gen(function* () {
        line(yield* output(bank_account.program), /^reloaded from the log: owner=Ada, balance=\$100, version 2$/)
        line(yield* output(commands.program), /^final: closed, balance \$70, 4 events in the log/)
      })
    )

    it.effect("saga runs unchanged on every in-memory service", () =>
      Effect.gen(function* () {
        sagaStory(yield* output(saga.program))
      }).pipe(Effect.provide(InMemory.layer))
    )
  })
})
