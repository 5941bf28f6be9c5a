import { eventStoreSuite } from "./conformance/eventStoreSuite.js"
import { snapshotSuite } from "./conformance/snapshotSuite.js"
import { transactionSuite } from "./conformance/transactionSuite.js"
import { memoryLayer } from "./memoryRaw.js"

eventStoreSuite("in-memory", memoryLayer)
transactionSuite("in-memory", memoryLayer)
snapshotSuite("in-memory", memoryLayer)
