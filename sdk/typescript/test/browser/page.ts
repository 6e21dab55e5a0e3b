/**
 * The browser test page's script (bundled by scripts/bundle-browser.mjs into out/browser/page.js):
 * it exposes the story and an error check over connect-web, for test/browser.test.ts to call in a
 * real Chromium page served from another origin than the node.
 *
 * @module
 */
import { Code, SessionType, errorDetails } from "@gatehouse/sdk";
import { createWebClients, type WebProtocol } from "@gatehouse/sdk/web";

import { runStory, type StoryResult } from "../../examples/run-story.js";

/** PageArgs is what the test hands the page. */
export interface PageArgs {
  baseUrl: string;
  protocol: WebProtocol;
  adminPassword: string;
}

declare global {
  interface Window {
    /** gatehouseStory runs the story over protocol and returns what it saw. */
    gatehouseStory(args: PageArgs): Promise<StoryResult>;
    /** gatehouseBadLogin logs in with a wrong password and returns the error's code and reason. */
    gatehouseBadLogin(args: PageArgs): Promise<{ code: string; reason: string }>;
  }
}

window.gatehouseStory = (args) =>
  runStory({
    clients: (token) => createWebClients({ baseUrl: args.baseUrl, protocol: args.protocol, token }),
    adminPassword: args.adminPassword,
    log: (line) => console.log(`[${args.protocol}] ${line}`),
  });

window.gatehouseBadLogin = async (args) => {
  const { session } = createWebClients({ baseUrl: args.baseUrl, protocol: args.protocol });
  try {
    await session.createSession({
      credential: { case: "password", value: { username: "admin", password: "not-the-password" } },
      type: SessionType.WEB_BROWSER,
    });
  } catch (err) {
    const d = errorDetails(err);
    return { code: Code[d.code], reason: d.reason };
  }
  throw new Error("the login with a wrong password succeeded");
};

document.title = "gatehouse sdk: ready";
