/**
 * The test projects of the workspace. Vitest 3.2 deprecates a workspace file
 * on its own, so `vitest.config.ts` imports this list as `test.projects`.
 */
export default ["packages/core", "packages/pg", "packages/cli", "packages/examples"]
