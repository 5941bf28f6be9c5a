import * as Layer from "effect/Layer"
import { scaleOutSuite } from "@mire/core/conformance"
import * as InMemory from "../src/InMemory.js"
import { memoryReadModel } from "./memoryRaw.js"

scaleOutSuite("in-memory", memoryReadModel.pipe(Layer.provideMerge(InMemory.layer)))
