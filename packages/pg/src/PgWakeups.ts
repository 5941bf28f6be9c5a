/**
 * Wake-ups from PostgreSQL: one dedicated `LISTEN` connection per store layer,
 * fanned out in-process to every subscription and saga worker.
 *
 * The connection is a plain `pg.Client` opened from the `PgClient`'s config
 * (not a pool connection: a pool connection's notifications are not exposed,
 * and a reserved one would count against the pool and be recycled by it). It
 * listens on mire's channels, and every notification is offered to an
 * in-process `PubSub`; closing one subscriber never touches the connection
 * (`@effect/sql-pg`'s shared `listen` runs `UNLISTEN` when any one listener
 * closes, and swallows connection errors). When the connection fails, a
 * warning is logged and it is re-established with backoff; after every
 * (re)connect each subscriber is woken once, since events may have been
 * committed while nobody listened. The store's own appends wake this
 * process's subscribers in-process through the layer's hub
 * ({@link LocalWakeups}), before their NOTIFY comes back from the server.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as PubSub from "effect/PubSub"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import pg from "pg"
import * as PgSchema from "./PgSchema.js"

/**
 * The channel appends notify in the `public` schema (payload: the category);
 * another schema's is its `PgSchema` names' `eventsChannel`.
 *
 * @since 0.1.0
 * @category constants
 */
export const eventsChannel = "mire_events"

/**
 * The channel saga workers are notified on in the `public` schema (payload:
 * the saga name); another schema's is its `PgSchema` names' `sagasChannel`.
 *
 * @since 0.1.0
 * @category constants
 */
export const sagasChannel = "mire_sagas"

/**
 * The `application_name` of the listener's connection (find it in
 * `pg_stat_activity`).
 *
 * @since 0.1.0
 * @category constants
 */
export const applicationName = "mire-listener"

/**
 * One wake-up: a notification on `channel`, or (payload `undefined`) a wake of
 * every subscriber after the listener (re)connected.
 *
 * @since 0.1.0
 * @category models
 */
export interface Wakeup {
  readonly channel: string
  readonly payload: string | undefined
}

/**
 * The listener's connection failed (or could not be opened).
 *
 * @since 0.1.0
 * @category errors
 */
export class ListenerLost extends Data.TaggedError("ListenerLost")<{ readonly cause: unknown }> {
  override get message(): string {
    return this.cause instanceof Error ? this.cause.message : String(this.cause)
  }
}

/**
 * The in-process fan-out of one listener.
 *
 * @since 0.1.0
 * @category models
 */
export interface PgWakeups {
  /**
   * The payloads notified on `channel` (those `accept` keeps, when given),
   * plus `""` once after every (re)connect. Never fails; closing it affects
   * no other subscriber.
   */
  readonly subscribe: (channel: string, accept?: (payload: string) => boolean) => Stream.Stream<string>
  /** Wakes this process's subscribers of `channel` as a notification would (for local appends). */
  readonly publish: (channel: string, payload: string) => Effect.Effect<void>
}

/**
 * The `PgWakeups` tag.
 *
 * @since 0.1.0
 * @category tags
 */
export const PgWakeups: Context.Tag<PgWakeups, PgWakeups> = Context.GenericTag<PgWakeups>("@mire/pg/PgWakeups")

/**
 * Options of the listener.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Channels to listen on (default: the events and sagas channels of the `PgSchema`'s schema). */
  readonly channels?: ReadonlyArray<string>
  /** `application_name` of the connection (default `mire-listener`). */
  readonly applicationName?: string
  /** Backoff between reconnect attempts (default: exponential from 100 ms, at most 5 s, reset after 30 s connected). */
  readonly reconnect?: Schedule.Schedule<unknown, ListenerLost>
}

const defaultReconnect: Schedule.Schedule<unknown, ListenerLost> = Schedule.exponential("100 millis").pipe(
  Schedule.union(Schedule.spaced("5 seconds")),
  Schedule.resetAfter("30 seconds")
)

/** The listener's `pg` config, from the `PgClient`'s config. */
const clientConfig = (config: PgClient.PgClientConfig, name: string): pg.ClientConfig => ({
  ...(config.url === undefined ? {} : { connectionString: Redacted.value(config.url) }),
  ...(config.host === undefined ? {} : { host: config.host }),
  ...(config.port === undefined ? {} : { port: config.port }),
  ...(config.database === undefined ? {} : { database: config.database }),
  ...(config.username === undefined ? {} : { user: config.username }),
  ...(config.password === undefined ? {} : { password: Redacted.value(config.password) }),
  ...(config.ssl === undefined ? {} : { ssl: config.ssl }),
  ...(config.stream === undefined ? {} : { stream: config.stream }),
  connectionTimeoutMillis: Duration.toMillis(config.connectTimeout ?? Duration.seconds(5)),
  application_name: name,
  keepAlive: true,
  // A silently dead connection (a NAT timeout, a failover without a reset) is noticed in
  // about a minute instead of the OS default of two hours; then the listener reconnects.
  keepAliveInitialDelayMillis: 10_000
})

/**
 * The in-process hub of a store layer: the listener offers every
 * notification to it, and the event store publishes its own commits to it,
 * so this process's subscribers wake without a round trip to the server.
 *
 * @since 0.1.0
 * @category tags
 */
export class LocalWakeups extends Context.Tag("@mire/pg/PgWakeups/LocalWakeups")<
  LocalWakeups,
  PubSub.PubSub<Wakeup>
>() {}

/**
 * The hub of a store layer (no connection). `PgEventStore.layer` and
 * {@link layer} both use this one layer, so within one build (layers are
 * memoized) the store's appends reach the listener's subscribers.
 *
 * @since 0.1.0
 * @category layers
 */
export const localLayer: Layer.Layer<LocalWakeups> = Layer.scoped(
  LocalWakeups,
  Effect.acquireRelease(PubSub.sliding<Wakeup>(1024), PubSub.shutdown)
)

/**
 * Starts the listener in the current scope and returns its fan-out.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<PgWakeups, never, PgClient.PgClient | Scope.Scope> =>
  Effect.flatMap(Effect.acquireRelease(PubSub.sliding<Wakeup>(1024), PubSub.shutdown), (hub) => makeWith(hub, options))

/**
 * Starts the listener in the current scope, offering to `hub`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeWith = (
  hub: PubSub.PubSub<Wakeup>,
  options: Options = {}
): Effect.Effect<PgWakeups, never, PgClient.PgClient | Scope.Scope> =>
  Effect.gen(function* () {
    const client = yield* PgClient.PgClient
    const names = yield* PgSchema.PgSchema
    const channels = options.channels ?? [names.eventsChannel, names.sagasChannel]
    const config = clientConfig(client.config, options.applicationName ?? applicationName)

    // One connection's life: connect, LISTEN, wake everyone, then wait for it to fail.
    const session: Effect.Effect<never, ListenerLost, Scope.Scope> = Effect.gen(function* () {
      const lost = yield* Deferred.make<never, ListenerLost>()
      const fail = (cause: unknown) => {
        Deferred.unsafeDone(lost, Exit.fail(new ListenerLost({ cause })))
      }
      const onError = (error: Error) => fail(error)
      const onEnd = () => fail(new Error("the listener's connection ended"))
      const onNotification = (message: pg.Notification) => {
        hub.unsafeOffer({ channel: message.channel, payload: message.payload ?? "" })
      }
      const connection = yield* Effect.acquireRelease(
        Effect.sync(() => {
          const c = new pg.Client(config)
          c.on("error", onError)
          c.on("end", onEnd)
          c.on("notification", onNotification)
          return c
        }),
        (c) =>
          // Finalizers run uninterruptibly: make the wait interruptible so the timeout can cut it short.
          Effect.promise(() => c.end().catch(() => undefined)).pipe(
            Effect.interruptible,
            Effect.timeoutOption("1 second"),
            Effect.ensuring(
              Effect.sync(() => {
                c.off("notification", onNotification)
                c.off("end", onEnd)
                // Keep a no-op error handler: a late socket error must not crash the process.
                c.off("error", onError)
                c.on("error", () => undefined)
              })
            )
          )
      )
      yield* Effect.tryPromise({
        try: async () => {
          await connection.connect()
          for (const channel of channels) await connection.query(`LISTEN ${connection.escapeIdentifier(channel)}`)
        },
        catch: (cause) => new ListenerLost({ cause })
      })
      for (const channel of channels) yield* PubSub.publish(hub, { channel, payload: undefined })
      yield* Effect.logDebug(`mire: listening on ${channels.join(", ")}`)
      return yield* Deferred.await(lost)
    })

    yield* Effect.scoped(session).pipe(
      Effect.tapError((error) =>
        Effect.logWarning(`mire: the wake-up listener's connection failed (${error.message}); reconnecting`)
      ),
      Effect.retry(options.reconnect ?? defaultReconnect),
      Effect.catchAllCause((cause) => Effect.logError("mire: the wake-up listener stopped", cause)),
      Effect.forkScoped
    )

    return {
      subscribe: (channel, accept) =>
        Stream.fromPubSub(hub).pipe(
          Stream.filter(
            (w) => w.channel === channel && (w.payload === undefined || accept === undefined || accept(w.payload))
          ),
          Stream.map((w) => w.payload ?? "")
        ),
      publish: (channel, payload) => Effect.asVoid(PubSub.publish(hub, { channel, payload }))
    } satisfies PgWakeups
  })

/**
 * The listener of a store layer: `PgStore.layer`, `PgSubscriptionStore.layer`
 * and `PgSagaStore.layer` share this one (layers are memoized), so a process
 * holds one listening connection per store layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<PgWakeups, never, PgClient.PgClient> = Layer.scoped(
  PgWakeups,
  Effect.flatMap(LocalWakeups, (hub) => makeWith(hub))
).pipe(Layer.provide(localLayer))
