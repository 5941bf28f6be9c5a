/**
 * # Pattern: High-throughput writes (`batched_write`)
 *
 * **Why this pattern exists.** Bulk ingest. Calling `save` once per event
 * pays a round trip and a commit per event, which is many times slower than
 * necessary: batch them.
 *
 * - Within one stream, record every event on the root, then save once: one
 *   statement appends them all (one round trip, one commit).
 * - Across streams, `EventStore.saveMany(roots)` (or `EventStore.appendMany`
 *   for already-encoded events) writes every stream in one transaction, all
 *   or nothing: one conflict writes nothing and names its stream.
 *
 * The figures printed are for this machine and this run; compare the three,
 * not the absolute numbers.
 *
 * Run: `npm run example -- batched_write`
 *
 * @since 0.1.0
 */
import { Aggregate, AggregateRoot, EventStore } from "@mire/core"
import { Console, Duration, Effect, Schema } from "effect"

/**
 * @since 0.1.0
 * @category events
 */
export const Reading = Schema.TaggedStruct("Reading", { celsius: Schema.Number })

/**
 * @since 0.1.0
 * @category models
 */
export interface Sensor {
  readonly readings: number
  readonly last: number
}

const initial: Sensor = { readings: 0, last: 0 }

/**
 * @since 0.1.0
 * @category aggregates
 */
export const Sensor = Aggregate.make({
  category: "sensor",
  events: Reading,
  initial,
  apply: (state, event): Sensor => ({ readings: state.readings + 1, last: event.celsius })
})

const reading = (i: number) => Reading.make({ celsius: 20 + Math.round(Math.sin(i / 10) * 50) / 10 })

const readings = (n: number) => Array.from({ length: n }, (_, i) => reading(i))

const report = (label: string, events: number, duration: Duration.Duration) => {
  const millis = Duration.toMillis(duration)
  const rate = Math.round(events / Math.max(millis / 1000, 1e-6))
  return Console.log(`${label.padEnd(34)} ${millis.toFixed(1).padStart(8)} ms  (${rate} events/s)`)
}

/**
 * Writes `events` events three ways and prints the timings.
 *
 * @since 0.1.0
 */
export const make = (options: { readonly events: number; readonly streams: number }) =>
  Effect.gen(function* () {
    const n = options.events
    yield* Console.log(`writing ${n} events three ways:`)

    // 1. One save per event: a round trip and a commit each.
    const single = crypto.randomUUID()
    const [perEvent] = yield* Effect.timed(
      Effect.gen(function* () {
        let root = yield* EventStore.loadOrDefault(Sensor, single)
        for (const event of readings(n)) root = yield* EventStore.save(AggregateRoot.record(root, event))
        return root
      })
    )
    yield* report("one save per event", n, perEvent)

    // 2. Record them all on the root, then one save.
    const batched = crypto.randomUUID()
    const [oneSave] = yield* Effect.timed(
      Effect.flatMap(EventStore.loadOrDefault(Sensor, batched), (root) =>
        EventStore.save(AggregateRoot.record(root, ...readings(n)))
      )
    )
    yield* report("record all, then one save", n, oneSave)

    // 3. Many streams in one transaction.
    const perStream = Math.ceil(n / options.streams)
    const ids = Array.from({ length: options.streams }, () => crypto.randomUUID())
    const [many] = yield* Effect.timed(
      Effect.flatMap(
        Effect.forEach(ids, (id) => EventStore.loadOrDefault(Sensor, id)),
        (roots) => EventStore.saveMany(roots.map((root) => AggregateRoot.record(root, ...readings(perStream))))
      )
    )
    yield* report(`saveMany across ${options.streams} streams`, perStream * options.streams, many)

    const speedup = Duration.toMillis(perEvent) / Math.max(Duration.toMillis(oneSave), 0.001)
    yield* Console.log(`batching within a stream: ${speedup.toFixed(0)}× faster than one save per event`)

    const versions = yield* Effect.forEach([single, batched, ...ids], (id) =>
      EventStore.streamVersion(`${Sensor.category}-${id}`)
    )
    const total = versions.reduce((sum, version) => sum + version, 0)
    yield* Console.log(`in the log: ${total} events in ${versions.length} streams`)
  })

/**
 * 1000 events each way; the cross-stream batch spreads them over 10 sensors.
 *
 * @since 0.1.0
 */
export const program = make({ events: 1000, streams: 10 })
