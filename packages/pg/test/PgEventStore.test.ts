import * as Layer from "effect/Layer"
import {
  eventStoreSuite,
  jsonLimitsSuite,
  jsonSuite,
  limits,
  snapshotSuite,
  transactionSuite
} from "@mire/core/conformance"
import * as PgEventStore from "../src/PgEventStore.js"
import * as PgSubscriptionStore from "../src/PgSubscriptionStore.js"
import { pgRaw } from "./raw.js"
import { migratedLayer, storeLayer } from "./utils.js"

const layer = pgRaw.pipe(Layer.provideMerge(storeLayer()))

eventStoreSuite("postgres", layer)
jsonSuite("postgres", PgSubscriptionStore.layer.pipe(Layer.provideMerge(layer)))
jsonLimitsSuite("postgres", pgRaw.pipe(Layer.provideMerge(PgEventStore.layerWith(limits).pipe(Layer.provideMerge(migratedLayer())))))
transactionSuite("postgres", layer)
snapshotSuite("postgres", layer)
