import * as Layer from "effect/Layer"
import { sagaSuite } from "../../core/test/conformance/sagaSuite.js"
import * as PgStore from "../src/PgStore.js"
import { migratedLayer } from "./utils.js"

sagaSuite("postgres", PgStore.layer.pipe(Layer.provideMerge(migratedLayer({ maxConnections: 40 }))))
