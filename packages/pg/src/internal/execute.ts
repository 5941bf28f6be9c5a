/**
 * The statements of mire's hot paths (appends, reads, loads, subscription
 * pages, checkpoints), run on a connection of the client's pool (or the
 * transaction's), without keeping the rows past the statement.
 *
 * `@effect/sql` runs each statement in `Effect.useSpan` and `Effect.scoped`:
 * both end with the statement's `Exit`, which holds its rows, and both
 * outlive the statement. Rows kept that way survive young-generation
 * collections and are promoted to the old one: measured on a catch-up of
 * 1,000-row pages, 1.3–4 MB promoted per scavenge against 0.03 MB here
 * (bench/README.md). Here the statement's connection is reserved from the
 * same pool in a `Scope` closed with `Exit.void`, and its `sql.execute` span
 * (the same name, and the attributes `@effect/sql-pg` derives from the client's
 * config) ends with the number of rows.
 *
 * Inside `sql.withTransaction` the statement runs on the transaction's
 * connection, as `@effect/sql` would run it. Statement transformers
 * (`Statement.setTransformer`) do not apply; rows are never transformed (mire
 * reads its own column names).
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlError from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Pipeable from "effect/Pipeable"
import * as Scope from "effect/Scope"
import type * as Tracer from "effect/Tracer"

/**
 * Runs one statement's text with its parameters: its rows. Its span's parent is `parent` when
 * given (a span the caller holds but did not put in the context), else the context's.
 */
export type Execute = (
  text: string,
  params: ReadonlyArray<unknown>,
  parent?: Tracer.AnySpan
) => Effect.Effect<ReadonlyArray<unknown>, SqlError.SqlError>

/** The span attributes `@effect/sql-pg` gives a statement (those of its `PgClient`, when provided). */
const spanAttributes = (client: Option.Option<PgClient.PgClient>): Record<string, unknown> =>
  Option.match(client, {
    onNone: () => ({ "db.system.name": "postgresql" }),
    onSome: ({ config }) => ({
      ...config.spanAttributes,
      "db.system.name": "postgresql",
      "db.namespace": config.database ?? config.username ?? "postgres",
      "server.address": config.host ?? "localhost",
      "server.port": config.port ?? 5432
    })
  })

/**
 * The scope a statement's pool connection is reserved into. `client.reserve` adds one finalizer
 * to it (the connection's release), run when the statement ends. A scope of `Scope.make` closes
 * through its release map (a `forEach` over its finalizers, then their exits collected): 13
 * Effect operations and about 10 µs of Node CPU more per statement (a 1-event load, measured).
 * As with any scope, finalizers run in the reverse order of their addition, each whatever the
 * others do (the first failure fails the close), and one added after the close runs at once.
 */
export class StatementScope extends Pipeable.Class() implements Scope.CloseableScope {
  readonly [Scope.ScopeTypeId]: Scope.ScopeTypeId = Scope.ScopeTypeId
  readonly [Scope.CloseableScopeTypeId]: Scope.CloseableScopeTypeId = Scope.CloseableScopeTypeId
  readonly strategy: ExecutionStrategy.ExecutionStrategy = ExecutionStrategy.sequential
  private finalizers: Array<Scope.Scope.Finalizer> = []
  private closed: Exit.Exit<unknown, unknown> | undefined = undefined

  fork(strategy: ExecutionStrategy.ExecutionStrategy): Effect.Effect<Scope.CloseableScope> {
    return Effect.flatMap(Scope.make(strategy), (child) => Effect.as(this.addFinalizer((exit) => Scope.close(child, exit)), child))
  }

  addFinalizer(finalizer: Scope.Scope.Finalizer): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.closed !== undefined) return Effect.asVoid(finalizer(this.closed))
      this.finalizers.push(finalizer)
      return Effect.void
    })
  }

  close(exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.closed !== undefined) return Effect.void
      this.closed = exit
      const finalizers = this.finalizers.reverse()
      this.finalizers = []
      const only = finalizers.length === 1 ? finalizers[0] : undefined
      if (only !== undefined) return Effect.asVoid(only(exit))
      return Effect.flatMap(
        Effect.forEach(finalizers, (finalizer) => Effect.exit(finalizer(exit))),
        (exits) => Effect.asVoid(Effect.all(exits))
      )
    })
  }
}

/**
 * The executor of the `SqlClient`'s pool.
 *
 * Outside a transaction the connection is reserved uninterruptibly, as
 * `sql.withTransaction` reserves its connection: an interrupt that arrives
 * while the statement waits for a free connection takes effect once the pool
 * hands one over, and the connection goes back (`PgClient`'s `connectTimeout`
 * bounds that wait). Reserved in an interruptible step, the connection the
 * pool hands over later would be kept forever; waited for in a fiber of its
 * own, a short statement costs 30–40 µs more (a 1-event load, measured).
 * Interrupted while it runs, the query is cancelled (`@effect/sql-pg`'s
 * canceller) before its connection goes back. The span is made and its end
 * installed uninterruptibly, so it always ends. It is not put in the
 * statement's context, where nothing would read it: a context change costs
 * a fiber-ref round trip, a quarter of the Effect operations a statement ran
 * (125 against 83, counted with a tracer's `context` hook). The transaction,
 * if any, and the clock are read in one step with the fiber, and the
 * connection is reserved into a {@link StatementScope}: 70 operations now.
 * Inside a transaction no scope is made.
 */
export const make = (client: SqlClient.SqlClient, pg: Option.Option<PgClient.PgClient>): Execute => {
  // Made once: a new object per statement, spread from these, cost more than the rest of the span.
  const attributes = { ...spanAttributes(pg), "db.operation.name": "execute" }
  const options = { kind: "client", captureStackTrace: false, attributes } as const
  const execute: Execute = (text, params, parent) =>
    Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(
        Effect.makeSpan("sql.execute", parent === undefined ? options : { kind: "client", captureStackTrace: false, attributes, parent }),
        (span) =>
          // The statement's text, then the transaction, if any, and the clock the span ends by, in one step.
          Effect.withFiberRuntime<ReadonlyArray<unknown>, SqlError.SqlError>((fiber) => {
            span.attribute("db.query.text", text)
            const clock = Context.get(fiber.currentDefaultServices, Clock.Clock)
            const end = (exit: Exit.Exit<ReadonlyArray<unknown>, SqlError.SqlError>) =>
              span.end(clock.unsafeCurrentTimeNanos(), Exit.map(exit, (rows) => rows.length))
            const transaction = Context.getOption(fiber.currentContext, SqlClient.TransactionConnection)
            if (Option.isSome(transaction)) {
              return Effect.onExit(restore(transaction.value[0].execute(text, params, undefined)), (exit) => Effect.sync(() => end(exit)))
            }
            // The pool's connection is reserved into this scope, closed with `Exit.void` (the rows stay out of it).
            const scope = new StatementScope()
            return Effect.onExit(
              Effect.flatMap(Scope.extend(client.reserve, scope), (connection) => restore(connection.execute(text, params, undefined))),
              (exit) => Effect.zipRight(scope.close(Exit.void), Effect.sync(() => end(exit)))
            )
          })
      )
    )
  return execute
}

/** The executor of the `SqlClient` in context. */
export const fromContext: Effect.Effect<Execute, never, SqlClient.SqlClient> = Effect.map(
  Effect.all([SqlClient.SqlClient, Effect.serviceOption(PgClient.PgClient)]),
  ([client, pg]) => make(client, pg)
)

/** Runs a statement built with the client's template tag. */
export const statement = (execute: Execute, statement: Statement.Statement<unknown>) => {
  const [text, params] = statement.compile(true)
  return execute(text, params)
}
