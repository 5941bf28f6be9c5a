import * as Layer from "effect/Layer"
import * as InMemorySubscriptionStore from "../src/InMemorySubscriptionStore.js"
import { eventStoreSuite } from "./conformance/eventStoreSuite.js"
import { holdBackRestartSuite } from "./conformance/holdBackRestartSuite.js"
import { jsonLimitsSuite, jsonSuite, limits } from "./conformance/jsonSuite.js"
import { snapshotSuite } from "./conformance/snapshotSuite.js"
import { statusSuite } from "./conformance/statusSuite.js"
import { subscriptionSuite } from "./conformance/subscriptionSuite.js"
import { transactionSuite } from "./conformance/transactionSuite.js"
import * as InMemory from "../src/InMemory.js"
import { projectionSuite } from "./conformance/projectionSuite.js"
import { memoryLayer, memoryLayerWith, memoryRaw, memoryReadModel } from "./memoryRaw.js"

eventStoreSuite("in-memory", memoryLayer)
jsonSuite("in-memory", InMemorySubscriptionStore.layer.pipe(Layer.provideMerge(memoryLayer)))
jsonLimitsSuite("in-memory", memoryLayerWith(limits))
transactionSuite("in-memory", memoryLayer)
snapshotSuite("in-memory", memoryLayer)
subscriptionSuite("in-memory", InMemorySubscriptionStore.layer.pipe(Layer.provideMerge(memoryLayer)))
holdBackRestartSuite("in-memory", InMemorySubscriptionStore.layer.pipe(Layer.provideMerge(memoryLayer)))
statusSuite("in-memory", InMemorySubscriptionStore.layer.pipe(Layer.provideMerge(memoryLayer)))
projectionSuite("in-memory", Layer.mergeAll(memoryReadModel, memoryRaw).pipe(Layer.provideMerge(InMemory.layer)))
