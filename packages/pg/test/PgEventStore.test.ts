import * as Layer from "effect/Layer"
import { eventStoreSuite } from "../../core/test/conformance/eventStoreSuite.js"
import { pgRaw } from "./raw.js"
import { storeLayer } from "./utils.js"

eventStoreSuite("postgres", pgRaw.pipe(Layer.provideMerge(storeLayer())))
