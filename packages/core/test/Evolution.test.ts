import * as Layer from "effect/Layer"
import * as InMemory from "../src/InMemory.js"
import { evolutionSuite } from "@mire/core/conformance"
import { memoryRaw, memoryReadModel } from "./memoryRaw.js"

evolutionSuite("in-memory", Layer.mergeAll(memoryRaw, memoryReadModel).pipe(Layer.provideMerge(InMemory.layer)))
