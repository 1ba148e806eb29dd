import { defineConfig } from "tsup";

// brainline/livekit, built after the main build (`npm run build`) and on its own. Built beside the
// other entries it would share esbuild chunks with the main entry, and `import "brainline"` would
// load one more file (about 1 ms, measured); so the few runtime helpers it uses (makeError,
// assembleToolCalls) are bundled into it instead, as its CommonJS build does anyway.
export default defineConfig({
  entry: { livekit: "src/integrations/livekit.ts" },
  format: ["esm", "cjs"],
  dts: true,
  sourcemap: true,
  clean: false,
  target: "node18",
  outDir: "dist/integrations",
});
