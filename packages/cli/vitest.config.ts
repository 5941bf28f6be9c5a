import { defaultServerConditions } from "vite"
import { defineProject } from "vitest/config"

// Workspace packages resolve to their TypeScript sources (the "@mire/source" export condition): no build needed.
const conditions = ["@mire/source", ...defaultServerConditions]

export default defineProject({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: ["@mire/source"] } },
  test: { name: "cli", include: ["test/**/*.test.ts"], testTimeout: 60_000, hookTimeout: 120_000, fileParallelism: false }
})
