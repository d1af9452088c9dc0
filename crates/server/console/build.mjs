// Builds the console into dist/ (embedded by the server's build.rs): one ES module bundle with
// xterm.js, one stylesheet, index.html. No network access; run after `npm ci`.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist");
await build({
  entryPoints: { app: "src/app.ts", style: "src/style.css" },
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "linked",
  outdir: "dist",
  logLevel: "warning",
});
copyFileSync("src/index.html", "dist/index.html");
