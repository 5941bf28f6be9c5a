/**
 * The subscription cursor: `(transactionId, globalPosition)`, compared as a
 * tuple. Delivery follows this order behind the xmin horizon, so a
 * transaction still in flight can never commit behind a cursor.
 *
 * @since 0.1.0
 */
import * as Order from "effect/Order"

/**
 * @since 0.1.0
 * @category models
 */
export interface Cursor {
  readonly transactionId: bigint
  readonly position: bigint
}

/**
 * Before every event.
 *
 * @since 0.1.0
 * @category constructors
 */
export const start: Cursor = { transactionId: 0n, position: 0n }

/**
 * The cursor of a recorded event.
 *
 * @since 0.1.0
 * @category constructors
 */
export const of = (event: { readonly transactionId: bigint; readonly globalPosition: bigint }): Cursor => ({
  transactionId: event.transactionId,
  position: event.globalPosition
})

/**
 * The largest cursor strictly before an event's: every event before it is at
 * or below it, the event itself is above it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const before = (cursor: Cursor): Cursor => ({ transactionId: cursor.transactionId, position: cursor.position - 1n })

/** The tuple order on its parts: the one comparison every cursor order shares. */
const compare = (transactionA: bigint, positionA: bigint, transactionB: bigint, positionB: bigint): -1 | 0 | 1 =>
  transactionA < transactionB
    ? -1
    : transactionA > transactionB
      ? 1
      : positionA < positionB
        ? -1
        : positionA > positionB
          ? 1
          : 0

/**
 * Tuple order (direct comparisons, no combinators: it is on the hot path of
 * every poll).
 *
 * @since 0.1.0
 * @category ordering
 */
export const order: Order.Order<Cursor> = (self, that) =>
  compare(self.transactionId, self.position, that.transactionId, that.position)

/**
 * Recorded events in cursor order, without building their cursors.
 *
 * @since 0.1.0
 * @category ordering
 */
export const eventOrder: Order.Order<{ readonly transactionId: bigint; readonly globalPosition: bigint }> = (
  self,
  that
) => compare(self.transactionId, self.globalPosition, that.transactionId, that.globalPosition)

/**
 * @since 0.1.0
 * @category ordering
 */
export const min: (self: Cursor, that: Cursor) => Cursor = Order.min(order)

/**
 * @since 0.1.0
 * @category ordering
 */
export const max: (self: Cursor, that: Cursor) => Cursor = Order.max(order)

/**
 * @since 0.1.0
 * @category predicates
 */
export const isZero = (cursor: Cursor): boolean => cursor.transactionId === 0n && cursor.position === 0n

/**
 * `(123, 456)`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const format = (cursor: Cursor): string => `(${cursor.transactionId}, ${cursor.position})`
