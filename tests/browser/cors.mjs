// Browser test: a storefront page on one origin calls rushgate's JSON API on another, in headless
// Chromium. With `server.cors_origins = ["http://localhost:PORT"]`, a page served from that origin
// gets through the preflight (JSON body, Authorization header, credentials included) and reads
// the answers; a page from an unlisted origin (http://127.0.0.1:PORT) is stopped by the browser
// at the preflight. Any failed step exits non-zero.
//
// Usage: node tests/browser/cors.mjs   (RUSHGATE_BIN and CHROMIUM override the paths)

import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { chromiumPath, freePort, startRushgate, step } from "./harness.mjs";

const dir = mkdtempSync(join(tmpdir(), "rushgate-cors-"));
let server;
let browser;
try {
  const [port, adminPort] = [await freePort(), await freePort()];
  const listed = `http://localhost:${port}`;
  const unlisted = `http://127.0.0.1:${port}`;
  const config = join(dir, "rushgate.toml");
  writeFileSync(config, `
[server]
listen = "127.0.0.1:${port}"
admin_listen = "127.0.0.1:${adminPort}"
cors_origins = ["${listed}"]

[passes]
signing_key_file = "${join(dir, "key.pem")}"
ticket_secret = "browser-cors-ticket-secret"

[[rooms]]
id = "drop"
upstream = "builtin:demo"
protect = ["/products/*"]
bypass = ["/health"]
`);
  server = await startRushgate(config, unlisted);

  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu"],
  });
  const page = await (await browser.newContext()).newPage();
  page.setDefaultTimeout(15_000);
  // From `origin`'s page: join the room on `api` (JSON body: a preflighted request), then poll
  // with the ticket as a bearer token (a preflighted header). Returns what the page could read.
  const callFrom = async (origin, api) => {
    await page.goto(`${origin}/health`);
    return page.evaluate(async (api) => {
      try {
        const joined = await fetch(`${api}/_rushgate/v1/rooms/drop/join`, {
          method: "POST",
          credentials: "include",
          headers: { "Content-Type": "application/json" },
          body: "{}",
        });
        const body = await joined.json();
        const polled = await fetch(`${api}/_rushgate/v1/rooms/drop/position`, {
          credentials: "include",
          headers: { Authorization: `Bearer ${body.ticket}` },
        });
        return { ok: true, join: joined.status, poll: polled.status, state: (await polled.json()).state };
      } catch (e) {
        return { ok: false, error: String(e) };
      }
    }, api);
  };

  step("a page on the listed origin calls the API on another origin");
  const good = await callFrom(listed, unlisted);
  if (!good.ok || ![200, 201].includes(good.join) || good.poll !== 200 || !good.state) {
    throw new Error(`listed origin: ${JSON.stringify(good)}`);
  }
  console.log(`    join ${good.join}, poll ${good.poll}, state ${good.state}`);

  step("a page on an unlisted origin is stopped at the preflight");
  const bad = await callFrom(unlisted, listed);
  if (bad.ok) throw new Error(`unlisted origin read the API: ${JSON.stringify(bad)}`);
  console.log(`    ${bad.error}`);

  step("the preflight answers say why");
  const pre = (origin) => fetch(`${unlisted}/_rushgate/v1/rooms/drop/join`, {
    method: "OPTIONS",
    headers: { Origin: origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type" },
  });
  const yes = await pre(listed);
  if (yes.status !== 204 || yes.headers.get("access-control-allow-origin") !== listed
      || yes.headers.get("access-control-allow-credentials") !== "true") {
    throw new Error(`listed preflight: ${yes.status} ${[...yes.headers]}`);
  }
  const no = await pre("https://evil.example");
  if (no.status !== 403 || no.headers.get("access-control-allow-origin")) {
    throw new Error(`unlisted preflight: ${no.status} ${[...no.headers]}`);
  }
  step("cors flow passed");
} catch (e) {
  console.error(`browser cors test FAILED: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server) server.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
}
