/**
 * # Pattern: Snapshots (`snapshot`)
 *
 * **Why this pattern exists.** A single aggregate has accumulated more than
 * a thousand events and loading it is on a hot path: every load replays
 * (reads and decodes) the whole stream. A snapshot caches the folded state
 * at some version, so a load reads the snapshot plus only the events after
 * it and stays roughly constant-time however long the stream grows.
 *
 * Opt in per aggregate by passing `snapshot: { schema, version, every }` to
 * `Aggregate.make`: the state's Schema (how it is stored), a snapshot
 * version (bump it when the state's shape changes, and older snapshots are
 * ignored), and the policy (write one whenever a save crosses a multiple of
 * `every`). Then save with `EventStore.saveSnapshotting` and load with
 * `EventStore.loadSnapshotted`.
 *
 * A snapshot is a cache, never a source of truth: it lives in
 * `es_snapshots`, apart from the event log (subscriptions and projections
 * never see it); it is written after the save commits, and a failed
 * snapshot write never fails a save. An old, undecodable or impossible
 * snapshot is ignored and the stream is replayed in full.
 *
 * Run: `npm run example -- snapshot`
 *
 * @since 0.1.0
 */
import { Aggregate, AggregateRoot, EventStore, Metrics } from "@mire/core"
import { Console, Duration, Effect, Metric, Option, Schema } from "effect"

/**
 * @since 0.1.0
 * @category events
 */
export const Posted = Schema.TaggedStruct("Posted", { amount: Schema.Int })

/**
 * The ledger's state, and its stored shape in a snapshot.
 *
 * @since 0.1.0
 * @category models
 */
export const LedgerState = Schema.Struct({ balance: Schema.Int, postings: Schema.Int })
/**
 * @since 0.1.0
 * @category models
 */
export type LedgerState = typeof LedgerState.Type

const initial: LedgerState = { balance: 0, postings: 0 }

/**
 * A ledger snapshotted every 500 events.
 *
 * @since 0.1.0
 * @category aggregates
 */
export const Ledger = Aggregate.make({
  category: "ledger",
  events: Posted,
  initial,
  apply: (state, event): LedgerState => ({ balance: state.balance + event.amount, postings: state.postings + 1 }),
  snapshot: { schema: LedgerState, version: 1, every: 500 }
})

const every = 500

/** The fastest of `runs` timed runs of an effect, in milliseconds, and its last result. */
const fastest = <A, E, R>(runs: number, effect: Effect.Effect<A, E, R>) =>
  Effect.map(Effect.replicateEffect(Effect.timed(effect), runs), (results) => ({
    millis: Math.min(...results.map(([duration]) => Duration.toMillis(duration))),
    value: results[results.length - 1]![1]
  }))

const snapshotHits = Effect.map(Metric.value(Metrics.snapshotHits), (state) => state.count)

/**
 * Writes `events` postings to one ledger through `saveSnapshotting`, in
 * batches of `batch`, then compares `load` and `loadSnapshotted`.
 *
 * @since 0.1.0
 */
export const make = (options: { readonly events: number; readonly batch: number }) =>
  Effect.gen(function* () {
    const id = crypto.randomUUID()
    let root = yield* EventStore.loadOrDefault(Ledger, id)
    while (root.version < options.events) {
      const n = Math.min(options.batch, options.events - root.version)
      const postings = Array.from({ length: n }, (_, i) => Posted.make({ amount: (root.version + i) % 7 === 0 ? -3 : 2 }))
      root = yield* EventStore.saveSnapshotting(AggregateRoot.record(root, ...postings))
    }
    const snapshotAt = Math.floor(root.version / every) * every
    yield* Console.log(
      `wrote ${root.version} events to ${root.streamId} with saveSnapshotting (a snapshot every ${every}: latest at v${snapshotAt})`
    )

    const full = yield* fastest(5, EventStore.load(Ledger, id))
    const hitsBefore = yield* snapshotHits
    const cached = yield* fastest(5, EventStore.loadSnapshotted(Ledger, id))
    const hits = (yield* snapshotHits) - hitsBefore

    yield* Console.log(`load:            ${full.millis.toFixed(1)} ms (replays all ${root.version} events)`)
    yield* Console.log(
      `loadSnapshotted: ${cached.millis.toFixed(1)} ms (snapshot at v${snapshotAt} + ${root.version - snapshotAt} events; ${hits} of 5 loads hit the snapshot)`
    )
    yield* Console.log(`speed-up: ${(full.millis / Math.max(cached.millis, 0.001)).toFixed(1)}×`)

    const same = Option.match(Option.all([full.value, cached.value]), {
      onNone: () => false,
      onSome: ([a, b]) => a.version === b.version && a.state.balance === b.state.balance && a.state.postings === b.state.postings
    })
    yield* Console.log(
      same
        ? `same state either way: balance ${root.state.balance}, ${root.state.postings} postings, version ${root.version}`
        : "MISMATCH: the snapshotted load differs from the full replay"
    )
  })

/**
 * About 2000 events on one ledger, then `load` vs `loadSnapshotted`.
 *
 * @since 0.1.0
 */
export const program = make({ events: 2010, batch: 100 })
