import { eventStoreSuite } from "./conformance/eventStoreSuite.js"
import { memoryLayer } from "./memoryRaw.js"

eventStoreSuite("in-memory", memoryLayer)
