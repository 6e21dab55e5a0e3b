// bundle-browser.mjs bundles the browser test page (out/test/browser/page.js, compiled by
// tsconfig.dev.json) with its dependencies (@gatehouse/sdk/web, connect-web, protobuf-es) into
// out/browser/page.js, next to a copy of test/browser/index.html: the page test/browser.test.ts
// loads in Chromium.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const pkg = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(pkg, "out", "browser");
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(pkg, "out", "test", "browser", "page.js")],
  outfile: join(out, "page.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  sourcemap: true,
  logLevel: "warning",
});
copyFileSync(join(pkg, "test", "browser", "index.html"), join(out, "index.html"));
