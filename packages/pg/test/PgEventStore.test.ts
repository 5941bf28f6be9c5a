import * as Layer from "effect/Layer"
import { eventStoreSuite } from "../../core/test/conformance/eventStoreSuite.js"
import { snapshotSuite } from "../../core/test/conformance/snapshotSuite.js"
import { transactionSuite } from "../../core/test/conformance/transactionSuite.js"
import { pgRaw } from "./raw.js"
import { storeLayer } from "./utils.js"

const layer = pgRaw.pipe(Layer.provideMerge(storeLayer()))

eventStoreSuite("postgres", layer)
transactionSuite("postgres", layer)
snapshotSuite("postgres", layer)
