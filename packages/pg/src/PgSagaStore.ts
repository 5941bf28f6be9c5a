/**
 * The PostgreSQL `SagaStore`: `es_saga_instances`, `es_saga_history` and
 * `es_outbox`. A due instance is claimed by one short `UPDATE` (over
 * `FOR UPDATE SKIP LOCKED`) that stamps it with a claim token and an expiry,
 * so several workers share the work without leases, no transaction stays
 * open while a step runs, and a crashed worker's claims expire; outcomes are
 * written in a transaction that locks the row and checks the token. Row locks
 * are transaction-scoped, so this works behind PgBouncer's transaction
 * pooling. Workers are woken by
 * `pg_notify('mire_sagas', <saga>)`, sent on commit.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { StoreError } from "@mire/core/EventStoreError"
import { JsonObject } from "@mire/core/RecordedEvent"
import * as SagaStore from "@mire/core/SagaStore"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { refail } from "./internal/errors.js"
import * as PgSchema from "./PgSchema.js"
import * as PgWakeups from "./PgWakeups.js"

/**
 * The channel saga workers listen on in the `public` schema; another
 * schema's is its `PgSchema` names' `sagasChannel`.
 *
 * @since 0.1.0
 */
export const channel = "mire_sagas"

/** An `es_saga_instances` row as selected by {@link columns}. */
const InstanceRowSql = Schema.Struct({
  saga_name: Schema.String,
  instance_id: Schema.String,
  correlation_id: Schema.String,
  status: SagaStore.Status,
  step_index: Schema.Int,
  // The saga's own state: its Schema decodes it when a step runs (an undecodable state fails the instance).
  state: Schema.Unknown,
  input: Schema.NullOr(SagaStore.StoredInput),
  awaiting: Schema.NullOr(Schema.Array(Schema.String)),
  deadline: Schema.NullOr(Schema.DateFromSelf),
  due_at: Schema.DateFromSelf,
  error: Schema.NullOr(Schema.String),
  attempts: Schema.Int,
  last_error: Schema.NullOr(Schema.String),
  version: Schema.Int,
  updated_at: Schema.DateFromSelf
})

const toInstance = (row: typeof InstanceRowSql.Type): SagaStore.InstanceRow => ({
  sagaName: row.saga_name,
  instanceId: row.instance_id,
  correlationId: row.correlation_id,
  status: row.status,
  stepIndex: row.step_index,
  state: row.state,
  input: row.input,
  awaiting: row.awaiting,
  deadline: row.deadline,
  dueAt: row.due_at,
  error: row.error,
  attempts: row.attempts,
  lastError: row.last_error,
  version: row.version,
  updatedAt: row.updated_at
})

const columns = `saga_name, instance_id, correlation_id, status, step_index, state, input, awaiting, deadline,
  due_at, error, attempts, last_error, version, updated_at`

/** An `es_outbox` row (`id` as text: a bigint). */
const OutboxRowSql = Schema.Struct({
  id: Schema.BigInt,
  idempotency_key: Schema.String,
  topic: Schema.String,
  payload: JsonObject,
  attempts: Schema.Int
})

const OutboxStatusRowSql = Schema.Struct({ ...OutboxRowSql.fields, status: Schema.Literal("pending", "published") })

const toOutbox = (row: typeof OutboxRowSql.Type): SagaStore.OutboxRow => ({
  id: row.id,
  idempotencyKey: row.idempotency_key,
  topic: row.topic,
  payload: row.payload,
  attempts: row.attempts
})

const CountRowSql = Schema.Struct({ status: SagaStore.Status, n: Schema.Int })

const HistoryRowSql = Schema.Struct({ step: Schema.String, outcome: Schema.String, worker_id: Schema.String })

/** A row that does not match its Schema: a typed `StoreError`, naming what is wrong. */
const corrupt = (operation: string) => (error: ParseResult.ParseError): StoreError =>
  new StoreError({
    kind: "Other",
    operation,
    cause: new Error(`corrupt row: ${ParseResult.TreeFormatter.formatErrorSync(error)}`)
  })

/** Decodes the rows a statement returned with `schema`. */
const decodeRows =
  <A, I>(schema: Schema.Schema<A, I>, operation: string) =>
  (rows: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<A>, StoreError> =>
    Effect.mapError(Schema.decodeUnknown(Schema.Array(schema))(rows), corrupt(operation))

/** An instance's input as the `input` column keeps it (JSON text, or NULL). */
const inputJson = (input: SagaStore.StoredInput | null, operation: string): Effect.Effect<string | null, StoreError> =>
  input === null
    ? Effect.succeed(null)
    : Effect.map(Effect.mapError(Schema.encode(SagaStore.StoredInput)(input), corrupt(operation)), (json) => JSON.stringify(json))

/**
 * Builds the store.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<SagaStore.SagaStore, never, PgClient.PgClient | PgWakeups.PgWakeups> = Effect.gen(function* () {
  const client = yield* PgClient.PgClient
  const listener = yield* PgWakeups.PgWakeups
  const names = yield* PgSchema.PgSchema
  const sql = client.withoutTransforms()
  const cols = sql.literal(columns)
  const json = (value: unknown) => (value === null || value === undefined ? null : JSON.stringify(value))
  const instances = (operation: string) => (rows: ReadonlyArray<unknown>) =>
    Effect.map(decodeRows(InstanceRowSql, operation)(rows), (decoded) => decoded.map(toInstance))
  const firstInstance = (operation: string) => (rows: ReadonlyArray<unknown>) =>
    Effect.map(instances(operation)(rows.slice(0, 1)), (decoded) => Option.fromNullable(decoded[0]))

  return {
    insert: (row) =>
      Effect.flatMap(
        inputJson(row.input, "sagaInsert"),
        (input) => sql`
        INSERT INTO ${names.sagaInstances} (saga_name, instance_id, correlation_id, status, step_index, state, input,
          awaiting, deadline, due_at, error, attempts, last_error, version)
        VALUES (${row.sagaName}, ${row.instanceId}, ${row.correlationId}, ${row.status}, ${row.stepIndex},
          ${json(row.state)}::jsonb, ${input}::jsonb, ${row.awaiting === null ? null : [...row.awaiting]}::text[],
          ${row.deadline}, ${row.dueAt}, ${row.error}, ${row.attempts}, ${row.lastError}, ${row.version})
        ON CONFLICT (saga_name, instance_id) DO NOTHING
        RETURNING 1`
      ).pipe(
        Effect.map((rows) => rows.length > 0),
        refail("sagaInsert")
      ),
    claimDue: (sagaName, now, token, until) =>
      sql`
        UPDATE ${names.sagaInstances} SET claim_token = ${token}::uuid, claimed_until = ${until}
        FROM (
          SELECT saga_name AS due_saga, instance_id AS due_instance FROM ${names.sagaInstances}
          WHERE saga_name = ${sagaName}
            AND ((status IN ('running', 'compensating') AND due_at <= ${now})
              OR (status = 'waiting' AND deadline <= ${now}))
            AND (claimed_until IS NULL OR claimed_until <= ${now})
          ORDER BY due_at
          LIMIT 1
          FOR UPDATE SKIP LOCKED) due
        WHERE saga_name = due.due_saga AND instance_id = due.due_instance
        RETURNING ${cols}`.pipe(refail("sagaClaimDue"), Effect.flatMap(firstInstance("sagaClaimDue"))),
    holdsClaim: (sagaName, instanceId, token, version) =>
      sql`
        SELECT 1 FROM ${names.sagaInstances}
        WHERE saga_name = ${sagaName} AND instance_id = ${instanceId}
          AND claim_token = ${token}::uuid AND version = ${version}
        FOR UPDATE`.pipe(
        Effect.map((rows) => rows.length > 0),
        refail("sagaHoldsClaim")
      ),
    extendClaim: (sagaName, instanceId, token, until, failure) =>
      (failure === undefined
        ? sql`
            UPDATE ${names.sagaInstances} SET claimed_until = ${until}
            WHERE saga_name = ${sagaName} AND instance_id = ${instanceId} AND claim_token = ${token}::uuid
            RETURNING 1`
        : sql`
            UPDATE ${names.sagaInstances}
            SET claimed_until = ${until}, attempts = ${failure.attempts}, last_error = ${failure.lastError}
            WHERE saga_name = ${sagaName} AND instance_id = ${instanceId} AND claim_token = ${token}::uuid
            RETURNING 1`
      ).pipe(
        Effect.map((rows) => rows.length > 0),
        refail("sagaExtendClaim")
      ),
    claimWaiting: (correlationId) =>
      sql`
        SELECT ${cols} FROM ${names.sagaInstances}
        WHERE correlation_id = ${correlationId} AND status = 'waiting'
        FOR UPDATE`.pipe(refail("sagaClaimWaiting"), Effect.flatMap(firstInstance("sagaClaimWaiting"))),
    update: (row) =>
      Effect.flatMap(
        inputJson(row.input, "sagaUpdate"),
        (input) => sql`
        UPDATE ${names.sagaInstances} SET
          status = ${row.status}, step_index = ${row.stepIndex}, state = ${json(row.state)}::jsonb,
          input = ${input}::jsonb, awaiting = ${row.awaiting === null ? null : [...row.awaiting]}::text[],
          deadline = ${row.deadline}, due_at = ${row.dueAt}, error = ${row.error}, attempts = ${row.attempts},
          last_error = ${row.lastError}, version = ${row.version}, claim_token = NULL, claimed_until = NULL,
          updated_at = now()
        WHERE saga_name = ${row.sagaName} AND instance_id = ${row.instanceId}`
      ).pipe(Effect.asVoid, refail("sagaUpdate")),
    appendHistory: (entry) =>
      sql`
        INSERT INTO ${names.sagaHistory} (saga_name, instance_id, step, outcome, worker_id)
        VALUES (${entry.sagaName}, ${entry.instanceId}, ${entry.step}, ${entry.outcome}, ${entry.workerId})`.pipe(
        Effect.asVoid,
        refail("sagaHistory")
      ),
    enqueue: (messages) =>
      sql`
        INSERT INTO ${names.outbox} (idempotency_key, topic, payload)
        SELECT * FROM unnest(${messages.map((m) => m.idempotencyKey)}::text[], ${messages.map((m) => m.topic)}::text[],
          ${messages.map((m) => m.payloadJson)}::jsonb[])
        ON CONFLICT (idempotency_key) DO NOTHING`.pipe(Effect.asVoid, refail("outboxEnqueue")),
    claimOutbox: (now, visibleAt, limit) =>
      sql`
        UPDATE ${names.outbox} SET next_attempt_at = ${visibleAt}, attempts = attempts + 1
        WHERE id IN (
          SELECT id FROM ${names.outbox} WHERE status = 'pending' AND next_attempt_at <= ${now}
          ORDER BY id LIMIT ${limit} FOR UPDATE SKIP LOCKED)
        RETURNING id::text AS id, idempotency_key, topic, payload, attempts`.pipe(
        refail("outboxClaim"),
        Effect.flatMap(decodeRows(OutboxRowSql, "outboxClaim")),
        Effect.map((rows) => rows.map(toOutbox))
      ),
    markPublished: (id) =>
      sql`UPDATE ${names.outbox} SET status = 'published', published_at = now() WHERE id = ${id.toString()}::int8`.pipe(
        Effect.asVoid,
        refail("outboxPublished")
      ),
    markFailed: (id, retryAt, error) =>
      sql`UPDATE ${names.outbox} SET next_attempt_at = ${retryAt}, last_error = ${error} WHERE id = ${id.toString()}::int8`.pipe(
        Effect.asVoid,
        refail("outboxFailed")
      ),
    outbox: sql`
      SELECT id::text AS id, idempotency_key, topic, payload, attempts, status FROM ${names.outbox} ORDER BY id`.pipe(
      refail("outbox"),
      Effect.flatMap(decodeRows(OutboxStatusRowSql, "outbox")),
      Effect.map((rows) => rows.map((row) => ({ ...toOutbox(row), published: row.status === "published" })))
    ),
    counts: (sagaName) =>
      sql`
        SELECT status, count(*)::int AS n FROM ${names.sagaInstances} WHERE saga_name = ${sagaName} GROUP BY status`.pipe(
        refail("sagaCounts"),
        Effect.flatMap(decodeRows(CountRowSql, "sagaCounts")),
        Effect.map((rows) => new Map(rows.map((r) => [r.status, r.n])))
      ),
    list: (sagaName) =>
      sql`SELECT ${cols} FROM ${names.sagaInstances} WHERE saga_name = ${sagaName} ORDER BY created_at, instance_id`.pipe(
        refail("sagaList"),
        Effect.flatMap(instances("sagaList"))
      ),
    history: (sagaName, instanceId) =>
      sql`
        SELECT step, outcome, worker_id FROM ${names.sagaHistory}
        WHERE saga_name = ${sagaName} AND instance_id = ${instanceId} ORDER BY id`.pipe(
        refail("sagaHistory"),
        Effect.flatMap(decodeRows(HistoryRowSql, "sagaHistory")),
        Effect.map((rows) => rows.map((r) => ({ sagaName, instanceId, step: r.step, outcome: r.outcome, workerId: r.worker_id })))
      ),
    notify: (sagaName) => sql`SELECT pg_notify(${names.sagasChannel}, ${sagaName})`.pipe(Effect.asVoid, refail("sagaNotify")),
    wakeups: listener.subscribe(names.sagasChannel)
  }
})

/**
 * The PostgreSQL `SagaStore` layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<SagaStore.SagaStore, never, PgClient.PgClient> = Layer.effect(SagaStore.SagaStore, make).pipe(
  Layer.provide(PgWakeups.layer)
)
