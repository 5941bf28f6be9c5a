/**
 * Telemetry without OpenTelemetry: spans recorded by an in-memory `Tracer`
 * (`Tracer.make` + `Effect.withTracer`), metrics read with `Metric.value`
 * and `Metric.snapshot`. Metrics are process-wide, so each test compares
 * before and after.
 */
import { assert, describe, it } from "@effect/vitest"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import * as AggregateRoot from "../src/AggregateRoot.js"
import * as EventStore from "../src/EventStore.js"
import * as ExpectedVersion from "../src/ExpectedVersion.js"
import * as InMemory from "../src/InMemory.js"
import * as Lease from "../src/Lease.js"
import * as Metrics from "../src/Metrics.js"
import * as Projection from "../src/Projection.js"
import * as Subscription from "../src/Subscription.js"
import * as LeaseStore from "../src/LeaseStore.js"
import * as SubscriptionStore from "../src/SubscriptionStore.js"
import { ProjectionSpec } from "../src/testing/index.js"
import { account, Deposited, Opened, Raw, startWorker, unique, waitUntil, world } from "@mire/core/conformance"
import { memoryRaw } from "./memoryRaw.js"

/** A span that records what it is told. */
class RecordingSpan implements Tracer.Span {
  readonly _tag = "Span"
  readonly spanId = crypto.randomUUID()
  readonly traceId: string
  readonly sampled = true
  readonly attributes = new Map<string, unknown>()
  readonly events: Array<string> = []
  links: ReadonlyArray<Tracer.SpanLink>
  status: Tracer.SpanStatus
  constructor(
    readonly name: string,
    readonly parent: Option.Option<Tracer.AnySpan>,
    readonly context: Context.Context<never>,
    links: ReadonlyArray<Tracer.SpanLink>,
    startTime: bigint,
    readonly kind: Tracer.SpanKind,
    attributes: Record<string, unknown>
  ) {
    this.traceId = Option.match(parent, { onNone: () => crypto.randomUUID(), onSome: (p) => p.traceId })
    this.links = links
    this.status = { _tag: "Started", startTime }
    for (const [key, value] of Object.entries(attributes)) this.attributes.set(key, value)
  }
  end(endTime: bigint, exit: Exit.Exit<unknown, unknown>): void {
    this.status = { _tag: "Ended", startTime: this.status.startTime, endTime, exit }
  }
  attribute(key: string, value: unknown): void {
    this.attributes.set(key, value)
  }
  event(name: string): void {
    this.events.push(name)
  }
  addLinks(links: ReadonlyArray<Tracer.SpanLink>): void {
    this.links = [...this.links, ...links]
  }
}

/** Runs `effect` under an in-memory tracer; returns its value and every span it opened. */
const traced = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.suspend(() => {
    const spans: Array<RecordingSpan> = []
    const tracer = Tracer.make({
      span: (name, parent, context, links, startTime, kind, options) => {
        const span = new RecordingSpan(name, parent, context, links, startTime, kind, options?.attributes ?? {})
        spans.push(span)
        return span
      },
      context: (f) => f()
    })
    return Effect.map(Effect.withTracer(effect, tracer), (value) => ({ value, spans }))
  })

const named = (spans: ReadonlyArray<RecordingSpan>, name: string) => spans.filter((s) => s.name === name)

const one = (spans: ReadonlyArray<RecordingSpan>, name: string, streamId?: string): RecordingSpan => {
  const found = named(spans, name).filter((s) => streamId === undefined || s.attributes.get("mire.stream_id") === streamId)
  return found[0] ?? assert.fail(`no span ${name}${streamId === undefined ? "" : ` for ${streamId}`}; spans: ${spans.map((s) => s.name).join(", ")}`)
}

const parentName = (span: RecordingSpan): string | undefined =>
  Option.match(span.parent, { onNone: () => undefined, onSome: (p) => (p._tag === "Span" ? p.name : undefined) })

const ended = (span: RecordingSpan) => span.status._tag === "Ended"

const count = (counter: Metric.Metric.Counter<number>) => Effect.map(Metric.value(counter), (s) => s.count)

/** Every metric in the registry with this name and tag. */
const tagged = (name: string, key: string, value: string) =>
  Effect.map(Metric.snapshot, (pairs) =>
    pairs.filter((p) => p.metricKey.name === name && p.metricKey.tags.some((t) => t.key === key && t.value === value))
  )

const store = memoryRaw.pipe(Layer.provideMerge(InMemory.layer))

describe("telemetry: spans", () => {
  it.live("every store operation has a span, with the stream id and event count", () =>
    Effect.gen(function* () {
      const Account = account(unique("tel"), 100)
      const { spans } = yield* traced(
        Effect.gen(function* () {
          const root = yield* EventStore.loadOrDefault(Account, "1")
          yield* EventStore.save(AggregateRoot.record(root, Opened.make({ owner: "Ada" }), Deposited.make({ amount: 1 })))
          yield* EventStore.load(Account, "1")
          yield* EventStore.transaction(EventStore.loadForUpdate(Account, "1"))
          yield* EventStore.saveMany([AggregateRoot.record(AggregateRoot.make(Account, "2"), Opened.make({ owner: "Bob" }))])
          yield* EventStore.append(`${Account.category}-3`, Account.category, ExpectedVersion.NoStream, [
            { eventType: `${Account.category}.opened`, schemaVersion: 1, data: { owner: "Cy" } }
          ])
          yield* Stream.runDrain(EventStore.readCategory(Account.category))
          yield* Stream.runDrain(EventStore.readAll({ limit: 1 }))
          yield* EventStore.loadSnapshotted(Account, "1")
          yield* EventStore.saveSnapshotting(AggregateRoot.record(AggregateRoot.make(Account, "4"), Opened.make({ owner: "Di" })))
        })
      )
      const streamId = `${Account.category}-1`
      const save = one(spans, "EventStore.save", streamId)
      assert.strictEqual(save.attributes.get("mire.event_count"), 2)
      const append = named(spans, "EventStore.appendMany").find((s) => parentName(s) === "EventStore.save")!
      assert.strictEqual(append.attributes.get("mire.stream_id"), streamId)
      assert.strictEqual(append.attributes.get("mire.event_count"), 2)
      assert.strictEqual(append.attributes.get("mire.stream_count"), 1)
      const load = named(spans, "EventStore.load").filter((s) => s.attributes.get("mire.stream_id") === streamId)
      assert.isAtLeast(load.length, 2)
      assert.strictEqual(load[load.length - 1]!.attributes.get("mire.version"), 2)
      // A load's reads have no span of their own: its statements are the load's children.
      assert.deepStrictEqual(named(spans, "EventStore.readStream"), [])
      assert.strictEqual(parentName(one(spans, "EventStore.loadForUpdate")), "EventStore.transaction")
      assert.strictEqual(
        named(spans, "EventStore.appendMany").find((s) => parentName(s) === "EventStore.saveMany")?.attributes.get("mire.stream_id"),
        `${Account.category}-2`
      )
      one(spans, "EventStore.appendMany", `${Account.category}-3`)
      assert.isTrue(named(spans, "EventStore.readLog").some((s) => s.attributes.get("mire.categories") === Account.category))
      assert.isTrue(named(spans, "EventStore.readLog").some((s) => s.attributes.get("mire.categories") === "*"))
      one(spans, "EventStore.loadSnapshotted", streamId)
      assert.strictEqual(parentName(one(spans, "EventStore.save", `${Account.category}-4`)), "EventStore.saveSnapshotting")
      assert.isTrue(spans.every(ended), "every span ended")
    }).pipe(Effect.provide(store)))

  it.live("a failed operation's span ends with its failure", () =>
    Effect.gen(function* () {
      const category = unique("telfail")
      const ev = { eventType: `${category}.e`, schemaVersion: 1, data: {} }
      yield* EventStore.append(`${category}-x`, category, ExpectedVersion.NoStream, [ev])
      const { spans } = yield* traced(Effect.either(EventStore.append(`${category}-x`, category, ExpectedVersion.NoStream, [ev])))
      const span = one(spans, "EventStore.appendMany", `${category}-x`)
      assert.strictEqual(span.status._tag, "Ended")
      if (span.status._tag === "Ended") assert.strictEqual(span.status.exit._tag, "Failure")
    }).pipe(Effect.provide(store)))

  it.live("each projection batch has a span with subscription id, batch size and fence token; each poll too", () =>
    Effect.gen(function* () {
      const Account = account(unique("telproj"))
      const subscriptionId = unique("tel-proj-")
      const { spans } = yield* traced(
        Effect.scoped(
          Effect.gen(function* () {
            const running = yield* ProjectionSpec.start(
              Projection.atLeastOnce({ subscriptionId, aggregate: Account, handle: () => Effect.void }),
              { batchSize: 2 }
            )
            for (const id of ["a", "b", "c"]) {
              yield* EventStore.save(AggregateRoot.record(AggregateRoot.make(Account, id), Opened.make({ owner: id })))
            }
            yield* running.whenCaughtUp()
          })
        )
      )
      const batches = named(spans, "ProjectionRunner.batch")
      assert.isAtLeast(batches.length, 2)
      for (const batch of batches) {
        assert.strictEqual(batch.attributes.get("mire.subscription_id"), subscriptionId)
        assert.strictEqual(batch.attributes.get("mire.fence_token"), "1")
        assert.isAtMost(batch.attributes.get("mire.batch_size") as number, 2)
      }
      assert.strictEqual(
        batches.reduce((n, b) => n + (b.attributes.get("mire.batch_size") as number), 0),
        3
      )
      const polls = named(spans, "Subscription.poll")
      assert.isAtLeast(polls.length, 2)
      assert.isTrue(polls.every((p) => p.attributes.get("mire.subscription_id") === subscriptionId))
    }).pipe(Effect.provide(store)))
})

describe("telemetry: metrics", () => {
  it.live("appends: calls, events, conflicts; load duration", () =>
    Effect.gen(function* () {
      const category = unique("telm")
      const ev = { eventType: `${category}.opened`, schemaVersion: 1, data: { owner: "x" } }
      const before = { calls: yield* count(Metrics.appends), events: yield* count(Metrics.eventsAppended), conflicts: yield* count(Metrics.conflicts) }
      const loadsBefore = (yield* Metric.value(Metrics.loadDuration)).count
      yield* EventStore.append(`${category}-1`, category, ExpectedVersion.NoStream, [ev, ev, ev])
      yield* EventStore.appendMany([
        { streamId: `${category}-2`, category, expected: ExpectedVersion.NoStream, events: [ev] },
        { streamId: `${category}-3`, category, expected: ExpectedVersion.NoStream, events: [ev] }
      ])
      yield* Effect.either(EventStore.append(`${category}-1`, category, ExpectedVersion.Exact(1), [ev]))
      assert.strictEqual((yield* count(Metrics.appends)) - before.calls, 3)
      assert.strictEqual((yield* count(Metrics.eventsAppended)) - before.events, 5)
      assert.strictEqual((yield* count(Metrics.conflicts)) - before.conflicts, 1)
      const Account = account(category)
      yield* EventStore.load(Account, "1")
      yield* EventStore.load(Account, "2")
      const loads = yield* Metric.value(Metrics.loadDuration)
      assert.strictEqual(loads.count - loadsBefore, 2)
      assert.isAtLeast(loads.min, 0)
      // The fiber's metric labels apply, as they do to `Metric.update`.
      const tagged = Metric.tagged(Metrics.loadDuration, "tenant", category)
      yield* Effect.tagMetrics(EventStore.load(Account, "1"), "tenant", category)
      assert.strictEqual((yield* Metric.value(tagged)).count, 1)
      assert.strictEqual((yield* Metric.value(Metrics.loadDuration)).count - loadsBefore, 2)
    }).pipe(Effect.provide(store)))

  it.live("snapshots: hits, misses, invalidations by reason, writes", () =>
    Effect.gen(function* () {
      const raw = yield* Raw
      const Account = account(unique("telsnap"), 2)
      const hits = yield* count(Metrics.snapshotHits)
      const misses = yield* count(Metrics.snapshotMisses)
      const writes = yield* count(Metrics.snapshotWrites)
      const oldVersion = Metric.tagged(Metrics.snapshotInvalidations, "reason", "old-version")
      const invalidations = yield* count(oldVersion)
      yield* EventStore.saveSnapshotting(
        AggregateRoot.record(AggregateRoot.make(Account, "1"), Opened.make({ owner: "Ada" }), Deposited.make({ amount: 1 }))
      )
      assert.strictEqual((yield* count(Metrics.snapshotWrites)) - writes, 1)
      yield* EventStore.loadSnapshotted(Account, "1")
      assert.strictEqual((yield* count(Metrics.snapshotHits)) - hits, 1)
      yield* EventStore.save(AggregateRoot.record(AggregateRoot.make(Account, "2"), Opened.make({ owner: "Bob" })))
      yield* EventStore.loadSnapshotted(Account, "2")
      assert.strictEqual((yield* count(Metrics.snapshotMisses)) - misses, 1)
      yield* raw.setSnapshot(`${Account.category}-1`, 2, 99, {})
      const { spans } = yield* traced(EventStore.loadSnapshotted(Account, "1"))
      assert.strictEqual((yield* count(oldVersion)) - invalidations, 1)
      // The full load the snapshotted load falls back to is its child.
      const streamId = `${Account.category}-1`
      assert.strictEqual(parentName(one(spans, "EventStore.load", streamId)), "EventStore.loadSnapshotted")
      assert.strictEqual(one(spans, "EventStore.load", streamId).attributes.get("mire.version"), 2)
      assert.isTrue(spans.every(ended), "every span ended")
    }).pipe(Effect.provide(store)))

  it.live("subscriptions: delivered, held back and lag, tagged by subscription", () =>
    Effect.gen(function* () {
      const category = unique("telsub")
      const subscriptionId = unique("tel-sub-")
      yield* EventStore.append(`${category}-1`, category, ExpectedVersion.NoStream, [
        { eventType: `${category}.e`, schemaVersion: 1, data: {} },
        { eventType: `${category}.e`, schemaVersion: 1, data: {} }
      ])
      const sub = yield* Subscription.make({ subscriptionId, categories: [category], batchSize: 1 })
      yield* sub.poll
      assert.strictEqual((yield* sub.lag).events, 1)
      const lag = yield* Metric.value(Metric.tagged(Metrics.subscriptionLag, "subscription", subscriptionId))
      assert.strictEqual(lag.value, 1)
      assert.strictEqual(
        (yield* count(Metric.tagged(Metrics.delivered, "subscription", subscriptionId))),
        1
      )
      assert.strictEqual((yield* tagged("mire_subscription_held_back", "subscription", subscriptionId)).length, 1)
    }).pipe(Effect.scoped, Effect.provide(store)))

  it.live("projections: lease acquisitions, handler failures and retries", () =>
    Effect.gen(function* () {
      const Account = account(unique("telh"))
      const acquired = yield* count(Metrics.leaseAcquired)
      const failures = yield* count(Metrics.handlerFailures)
      const retries = yield* count(Metrics.handlerRetries)
      let attempts = 0
      const running = yield* ProjectionSpec.start(
        Projection.atLeastOnce({
          subscriptionId: unique("tel-h-"),
          aggregate: Account,
          handle: () => (++attempts <= 2 ? Effect.fail("flaky" as const) : Effect.void)
        })
      )
      yield* EventStore.save(AggregateRoot.record(AggregateRoot.make(Account, "1"), Opened.make({ owner: "Ada" })))
      yield* running.whenCaughtUp()
      assert.strictEqual(attempts, 3)
      assert.strictEqual((yield* count(Metrics.handlerFailures)) - failures, 2)
      assert.strictEqual((yield* count(Metrics.handlerRetries)) - retries, 2)
      assert.isAtLeast((yield* count(Metrics.leaseAcquired)) - acquired, 1)
      // The runner's polls deliver through a subscription: its delivered counter is tagged.
      assert.strictEqual((yield* count(Metric.tagged(Metrics.delivered, "subscription", running.subscriptionId))), 1)
    }).pipe(Effect.scoped, Effect.provide(store)))

  it.live("projections: a lease lost on renewal, a checkpoint refused by the fence", () =>
    Effect.gen(function* () {
      const leases = yield* LeaseStore.LeaseStore
      const Account = account(unique("telfence"))
      const lost = yield* count(Metrics.leaseLost)
      const refusals = yield* count(Metrics.fenceRefusals)
      // Another worker takes over at once: renewals fail, fenced commits are refused, and once
      // lost the lease stays taken.
      let taken = false
      const usurped: LeaseStore.LeaseStore = {
        ...leases,
        acquire: (subscriptionId, workerId, ttl) =>
          taken ? Effect.succeed(Option.none()) : leases.acquire(subscriptionId, workerId, ttl),
        renew: () => Effect.sync(() => (taken = true)).pipe(Effect.as(false)),
        commitFenced: (subscriptionId, fence) =>
          Effect.sync(() => (taken = true)).pipe(Effect.zipRight(Effect.fail(new Lease.LeaseLost({ subscriptionId, ...fence }))))
      }
      // An at-least-once batch checkpoints with the subscription store's fenced write (no transaction).
      const subscriptions = yield* SubscriptionStore.SubscriptionStore
      const refusing: SubscriptionStore.SubscriptionStore = {
        ...subscriptions,
        writeCheckpoint: (subscriptionId, checkpoint, fence) =>
          Option.isSome(fence)
            ? Effect.sync(() => (taken = true)).pipe(Effect.as(false))
            : subscriptions.writeCheckpoint(subscriptionId, checkpoint, fence)
      }
      yield* EventStore.save(AggregateRoot.record(AggregateRoot.make(Account, "1"), Opened.make({ owner: "Ada" })))
      yield* ProjectionSpec.start(
        Projection.atLeastOnce({ subscriptionId: unique("tel-fence-"), aggregate: Account, handle: () => Effect.void })
      ).pipe(Effect.provideService(LeaseStore.LeaseStore, usurped), Effect.provideService(SubscriptionStore.SubscriptionStore, refusing))
      yield* waitUntil(
        Effect.map(Effect.all([count(Metrics.leaseLost), count(Metrics.fenceRefusals)]), ([l, r]) => l > lost && r > refusals),
        "a lease loss and a fence refusal"
      )
    }).pipe(Effect.scoped, Effect.provide(store)))

  it.live("sagas: instances by saga and state", () =>
    Effect.gen(function* () {
      const w = world()
      const gauge = (state: string) =>
        Metric.value(Metric.tagged(Metric.tagged(Metrics.sagaInstances, "saga", w.fulfilment.name), "state", state))
      const worker = yield* startWorker(w, "tel-saga")
      yield* w.place("o1", 50)
      yield* w.place("o2", 500)
      // The gauge is refreshed from the saga store periodically (every 5 s).
      yield* waitUntil(
        Effect.map(Effect.all([gauge("completed"), gauge("failed")]), ([c, f]) => c.value === 1 && f.value === 1),
        "one completed and one failed instance in the gauge",
        15_000
      )
      assert.strictEqual((yield* gauge("running")).value, 0)
      yield* worker.stop
    }).pipe(Effect.provide(InMemory.layer)), { timeout: 30_000 })
})
