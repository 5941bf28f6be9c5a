import type * as SqlClient from "@effect/sql/SqlClient"
import type * as Checkpoint from "@mire/core/Checkpoint"
import type * as Lease from "@mire/core/Lease"
import type * as PgSchema from "../PgSchema.js"

/** The `delivered` column of a checkpoint (stream → version delivered past its cursor). */
export const deliveredJson = (checkpoint: Checkpoint.Checkpoint): string =>
  JSON.stringify(Object.fromEntries(checkpoint.delivered))

/** Writes a checkpoint only while the lease matches `fence`; returns a row when it did. */
export const fencedUpdate = (
  sql: SqlClient.SqlClient,
  names: PgSchema.Names,
  subscriptionId: string,
  checkpoint: Checkpoint.Checkpoint,
  fence: Lease.Fence
) =>
  sql`
    UPDATE ${names.subscriptions}
      SET last_transaction_id = ${checkpoint.cursor.transactionId.toString()}::xid8,
          last_position = ${checkpoint.cursor.position}, delivered = ${deliveredJson(checkpoint)}::jsonb,
          failure = NULL, failed_at = NULL, checkpointed = true, updated_at = now()
    WHERE subscription_id = ${subscriptionId}
      AND worker_id = ${fence.workerId} AND fence_token = ${fence.fenceToken.toString()}::int8
    RETURNING 1`
