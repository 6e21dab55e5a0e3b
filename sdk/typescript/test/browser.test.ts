/**
 * The SDK in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by
 * playwright-core) loads the test page from another origin than the node and runs the story over
 * connect-web, with the Connect protocol and with gRPC-Web, against the node's HTTP port. The node
 * must allow the page's origin (--cors-allowed-origin).
 *
 * The page comes from GATEHOUSE_PAGE_URL (integration/sdk_typescript_test.go serves out/browser and
 * starts the node with that origin); without it the test serves out/browser itself on
 * http://127.0.0.1:5174 (GATEHOUSE_PAGE_PORT), the origin to allow when running it by hand.
 *
 * @module
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium, type BrowserContext } from "playwright-core";

import type { StoryResult } from "../examples/run-story.js";
import { liveNode } from "./env.js";
import type { PageArgs } from "./browser/page.js";

const node = liveNode();
const chromiumPath = process.env["CHROMIUM_PATH"] ?? "/usr/bin/chromium";
const pageDir = join(dirname(fileURLToPath(import.meta.url)), "..", "browser");

/** servePage serves out/browser on 127.0.0.1:port and returns the server and the page's URL. */
async function servePage(port: number): Promise<{ server: Server; url: string }> {
  const types: Record<string, string> = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json" };
  const server = createServer((req, res) => {
    const path = normalize(new URL(req.url ?? "/", "http://page").pathname).replace(/^(\.\.[/\\])+/, "");
    const file = join(pageDir, path === "/" ? "index.html" : path);
    if (!file.startsWith(pageDir) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  return { server, url: `http://127.0.0.1:${port}/index.html` };
}

describe("in headless Chromium", () => {
  let context: BrowserContext;
  let userDataDir: string;
  let pageUrl = process.env["GATEHOUSE_PAGE_URL"] ?? "";
  let server: Server | undefined;

  before(async () => {
    if (!existsSync(chromiumPath)) {
      throw new Error(`no Chromium at ${chromiumPath}: run scripts/sdk-typescript.sh deps browser-deps`);
    }
    if (!existsSync(join(pageDir, "page.js"))) {
      throw new Error(`no test page in ${pageDir}: run npm run build:dev`);
    }
    if (!pageUrl) {
      ({ server, url: pageUrl } = await servePage(Number(process.env["GATEHOUSE_PAGE_PORT"] ?? 5174)));
    }
    assert.notEqual(new URL(pageUrl).origin, new URL(node.httpUrl).origin, "the page must come from another origin");
    userDataDir = mkdtempSync(join(tmpdir(), "gatehouse-chromium-"));
    // NOTE: a persistent context, because Chromium's --user-data-dir is playwright's to set: a
    // fresh directory per run keeps every run of the test from the state of the last.
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: chromiumPath,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
      timeout: 60_000,
    });
  });

  after(async () => {
    await context?.close();
    server?.close();
    if (userDataDir) {
      rmSync(userDataDir, { recursive: true, force: true });
    }
  });

  for (const protocol of ["connect", "grpc-web"] as const) {
    test(`the story over ${protocol}: roles_changed, then terminated`, { timeout: 90_000 }, async () => {
      const page = await context.newPage();
      const console: string[] = [];
      page.on("console", (m) => console.push(`${m.type()}: ${m.text()}`));
      page.on("pageerror", (e) => console.push(`pageerror: ${e.message}`));
      try {
        await page.goto(pageUrl);
        await page.waitForFunction(() => document.title === "gatehouse sdk: ready", undefined, { timeout: 30_000 });
        const args: PageArgs = { baseUrl: node.httpUrl, protocol, adminPassword: node.adminPassword };
        let r: StoryResult;
        try {
          r = await page.evaluate((a) => window.gatehouseStory(a), args);
        } catch (err) {
          throw new Error(`the story failed in the page: ${String(err)}\nconsole:\n${console.join("\n")}`);
        }
        assert.deepEqual(r.rolesChanged.added, [r.role]);
        assert.deepEqual(r.terminated, { reason: "TERMINATION_REASON_REVOKED_BY_ADMIN", note: "the story is over" });
        assert.equal(r.streamEnded, true);
        assert.deepEqual(r.validateAfterEnd, {
          code: "Unauthenticated",
          reason: "SESSION_TERMINATED",
          terminationReason: "TERMINATION_REASON_REVOKED_BY_ADMIN",
        });
        const bad = await page.evaluate((a) => window.gatehouseBadLogin(a), args);
        assert.deepEqual(bad, { code: "Unauthenticated", reason: "INVALID_CREDENTIALS" });
      } finally {
        await page.close();
      }
    });
  }
});
