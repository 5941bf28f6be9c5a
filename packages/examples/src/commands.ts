/**
 * # Pattern: Commands & validation (`commands`)
 *
 * **Why this pattern exists.** An event records something that happened; it
 * is never refused once it is in the log. So the business rules ("can't
 * overdraft", "can't operate on a closed account", "amounts are positive")
 * run *before* recording: a command looks at the current state and either
 * returns the events to record or fails with a typed domain error.
 *
 Commands are plain data (a `Data.TaggedEnum`), and one pure function
 * `decide(state, command)` returns the events to record or a domain error
 * (a `Data.TaggedError`), so the compiler lists every way a command can be
 * refused and `Effect.catchTag` handles each by name. `CommandHandler.make`
 * builds the handler around it (load → decide → save, retrying on a
 * concurrency conflict). A refused command writes nothing.
 *
 * Run: `npm run example -- commands`
 *
 * @since 0.1.0
 */
import { Aggregate, CommandHandler, EventStore } from "@mire/core"
import { Chunk, Console, Data, Effect, Either, Schema, Stream } from "effect"

/**
 * @since 0.1.0
 * @category events
 */
export const Opened = Schema.TaggedStruct("Opened", { owner: Schema.String })
/**
 * @since 0.1.0
 * @category events
 */
export const Deposited = Schema.TaggedStruct("Deposited", { amount: Schema.Int.pipe(Schema.positive()) })
/**
 * @since 0.1.0
 * @category events
 */
export const Withdrawn = Schema.TaggedStruct("Withdrawn", { amount: Schema.Int.pipe(Schema.positive()) })
/**
 * @since 0.1.0
 * @category events
 */
export const Closed = Schema.TaggedStruct("Closed", {})
/**
 * @since 0.1.0
 * @category events
 */
export const CheckingEvent = Schema.Union(Opened, Deposited, Withdrawn, Closed)
/**
 * @since 0.1.0
 * @category events
 */
export type CheckingEvent = typeof CheckingEvent.Type

/**
 * @since 0.1.0
 * @category models
 */
export interface Checking {
  readonly status: "new" | "open" | "closed"
  readonly owner: string
  readonly balance: number
}

const initial: Checking = { status: "new", owner: "", balance: 0 }

/**
 * @since 0.1.0
 * @category aggregates
 */
export const Checking = Aggregate.make({
  category: "checking",
  events: CheckingEvent,
  initial,
  apply: (state, event): Checking => {
    switch (event._tag) {
      case "Opened":
        return { ...state, status: "open", owner: event.owner }
      case "Deposited":
        return { ...state, balance: state.balance + event.amount }
      case "Withdrawn":
        return { ...state, balance: state.balance - event.amount }
      case "Closed":
        return { ...state, status: "closed" }
    }
  }
})

/**
 * The amount is not a positive whole number of dollars.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidAmount extends Data.TaggedError("InvalidAmount")<{ readonly amount: number }> {
  override get message(): string {
    return `amount must be a positive whole number, got ${this.amount}`
  }
}

/**
 * The account was already opened.
 *
 * @since 0.1.0
 * @category errors
 */
export class AlreadyOpen extends Data.TaggedError("AlreadyOpen")<{ readonly owner: string }> {
  override get message(): string {
    return `account is already open (owner ${this.owner})`
  }
}

/**
 * The account was never opened or is closed.
 *
 * @since 0.1.0
 * @category errors
 */
export class AccountNotOpen extends Data.TaggedError("AccountNotOpen")<{ readonly status: "new" | "closed" }> {
  override get message(): string {
    return this.status === "closed" ? "account is closed" : "account is not open"
  }
}

/**
 * A withdrawal larger than the balance.
 *
 * @since 0.1.0
 * @category errors
 */
export class InsufficientFunds extends Data.TaggedError("InsufficientFunds")<{
  readonly balance: number
  readonly requested: number
}> {
  override get message(): string {
    return `insufficient funds: balance $${this.balance}, requested $${this.requested}`
  }
}

const positive = (amount: number): Effect.Effect<number, InvalidAmount> =>
  Number.isSafeInteger(amount) && amount > 0 ? Effect.succeed(amount) : Effect.fail(new InvalidAmount({ amount }))

const mustBeOpen = (state: Checking): Effect.Effect<void, AccountNotOpen> =>
  state.status === "open" ? Effect.void : Effect.fail(new AccountNotOpen({ status: state.status }))

/**
 * The rules, one pure function per command: from the state alone, the
 * events to record or the domain error that refuses it.
 *
 * @since 0.1.0
 * @category commands
 */
export const open = (state: Checking, owner: string): Effect.Effect<ReadonlyArray<CheckingEvent>, AlreadyOpen> =>
  state.status === "new" ? Effect.succeed([Opened.make({ owner })]) : Effect.fail(new AlreadyOpen({ owner: state.owner }))

/**
 * @since 0.1.0
 * @category commands
 */
export const deposit = (
  state: Checking,
  amount: number
): Effect.Effect<ReadonlyArray<CheckingEvent>, AccountNotOpen | InvalidAmount> =>
  Effect.zipRight(mustBeOpen(state), Effect.map(positive(amount), (amount) => [Deposited.make({ amount })]))

/**
 * @since 0.1.0
 * @category commands
 */
export const withdraw = (
  state: Checking,
  amount: number
): Effect.Effect<ReadonlyArray<CheckingEvent>, AccountNotOpen | InvalidAmount | InsufficientFunds> =>
  Effect.gen(function* () {
    yield* mustBeOpen(state)
    yield* positive(amount)
    if (amount > state.balance) return yield* new InsufficientFunds({ balance: state.balance, requested: amount })
    return [Withdrawn.make({ amount })]
  })

/**
 * @since 0.1.0
 * @category commands
 */
export const close = (state: Checking): Effect.Effect<ReadonlyArray<CheckingEvent>, AccountNotOpen> =>
  Effect.as(mustBeOpen(state), [Closed.make({})])

/**
 * The commands an account accepts: plain data, so a command can come from a
 * request body or a queue.
 *
 * @since 0.2.0
 * @category commands
 */
export type Command = Data.TaggedEnum<{
  Open: { readonly owner: string }
  Deposit: { readonly amount: number }
  Withdraw: { readonly amount: number }
  Close: {}
}>

/**
 * Constructors of the {@link Command}s.
 *
 * @since 0.2.0
 * @category commands
 */
export const Command = Data.taggedEnum<Command>()

/**
 * The decision: dispatches a command to its rule. Pure (no services, no I/O), so it is
 * tested without a store, and the handler can run it again after a
 * concurrency conflict.
 *
 * @since 0.2.0
 * @category commands
 */
export const decide = (
  state: Checking,
  command: Command
): Effect.Effect<ReadonlyArray<CheckingEvent>, AlreadyOpen | AccountNotOpen | InvalidAmount | InsufficientFunds> =>
  Command.$match(command, {
    Open: ({ owner }) => open(state, owner),
    Deposit: ({ amount }) => deposit(state, amount),
    Withdraw: ({ amount }) => withdraw(state, amount),
    Close: () => close(state)
  })

/**
 * The handler: load → decide → save, retrying the whole unit of work if
 * another writer saved first (a bounded, jittered `Schedule` by default).
 * `handle(id, command)` returns the saved root, or fails with the domain
 * error `decide` chose (nothing is written then).
 *
 * @since 0.1.0
 * @category handlers
 */
export const handle = CommandHandler.make({ aggregate: Checking, decide })

/**
 * Opens an account, moves money, and shows each refused command leaving the
 * log untouched.
 *
 * @since 0.1.0
 */
export const program = Effect.gen(function* () {
  const id = crypto.randomUUID()
  const attempt = (label: string, command: Command) =>
    Effect.flatMap(Effect.either(handle(id, command)), (result) =>
      Either.match(result, {
        onLeft: (error) => Console.log(`${label}: refused (${error.message})`),
        onRight: (outcome) =>
          outcome._tag === "Decided"
            ? Console.log(`${label}: ok, balance $${outcome.root.state.balance}, version ${outcome.root.version}`)
            : Console.log(`${label}: already handled`)
      })
    )

  yield* attempt("deposit $10 before opening", Command.Deposit({ amount: 10 }))
  yield* attempt("open for Ada", Command.Open({ owner: "Ada" }))
  yield* attempt("open again", Command.Open({ owner: "Bob" }))
  yield* attempt("deposit $100", Command.Deposit({ amount: 100 }))
  yield* attempt("deposit -$5", Command.Deposit({ amount: -5 }))
  yield* attempt("withdraw $30", Command.Withdraw({ amount: 30 }))
  yield* attempt("withdraw $500", Command.Withdraw({ amount: 500 }))
  yield* attempt("close", Command.Close())
  yield* attempt("deposit $5 after closing", Command.Deposit({ amount: 5 }))

  // A caller can also react to one refusal by name; the other errors stay typed.
  yield* handle(id, Command.Withdraw({ amount: 1 })).pipe(
    Effect.catchTag("AccountNotOpen", (e) => Console.log(`withdraw $1: caught AccountNotOpen (${e.status})`))
  )

  // Events carry their aggregate id (the stream id without the category): no string slicing.
  const log = Chunk.toReadonlyArray(yield* Stream.runCollect(EventStore.readStream(`${Checking.category}-${id}`)))
  yield* Console.log(`account ${log[0]?.aggregateId}: ${log.map((e) => e.eventType).join(", ")}`)

  const final = yield* EventStore.loadOrDefault(Checking, id)
  yield* Console.log(
    `final: ${final.state.status}, balance $${final.state.balance}, ${final.version} events in the log (only accepted commands)`
  )
})
