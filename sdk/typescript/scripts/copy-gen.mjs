// copy-gen.mjs copies the generated code (gen/ts at the repository root, committed and never
// edited by hand) into src/gen, where the package's sources import it and tsc compiles it along
// with them. src/gen is a build artefact (gitignored); regenerate gen/ts with
// scripts/sdk-typescript.sh generate.
import { cpSync, existsSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const pkg = join(dirname(fileURLToPath(import.meta.url)), "..");
const from = join(pkg, "..", "..", "gen", "ts");
const to = join(pkg, "src", "gen");
if (!existsSync(from)) {
  console.error(`copy-gen: ${from} is missing; run scripts/sdk-typescript.sh generate`);
  process.exit(1);
}
rmSync(to, { recursive: true, force: true });
cpSync(from, to, { recursive: true });
