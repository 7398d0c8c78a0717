// Browser test: moving a place from one device to another in headless Chromium.
//
// Starts the already-built rushgate (target/debug/rushgate) with one demo room whose only slot a
// "blocker" holds, so shoppers wait. Device A (one browser context) waits on the protected page,
// asks for a transfer code and gets a link and a QR code; device B (another context, its own
// cookies) opens the link, moves the place, and lands on the waiting page at the same position.
// A's page then says the place moved; once the blocker leaves, B (not A) reaches the product
// page. Screenshots go to target/browser/transfer-*.png. Any failed step exits non-zero.
//
// Usage: node tests/browser/transfer.mjs   (RUSHGATE_BIN and CHROMIUM override the paths)

import { mkdirSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { chromiumPath, freePort, shots, startRushgate, step, until } from "./harness.mjs";

const dir = mkdtempSync(join(tmpdir(), "rushgate-transfer-"));
let server;
let browser;
try {
  const [port, adminPort] = [await freePort(), await freePort()];
  const base = `http://127.0.0.1:${port}`;
  const api = `${base}/_rushgate/v1`;
  const config = join(dir, "rushgate.toml");
  writeFileSync(config, `
[server]
listen = "127.0.0.1:${port}"
admin_listen = "127.0.0.1:${adminPort}"

[store]
refresh_ms = 50

[passes]
signing_key_file = "${join(dir, "key.pem")}"
ticket_secret = "browser-transfer-ticket-secret"

[[rooms]]
id = "drop"
admit_per_minute = 6000
max_active = 1
idle_timeout_seconds = 30
upstream = "builtin:demo"
protect = ["/products/*"]
bypass = ["*.css", "/health"]

[shop]
api_key = "browser-transfer-shop-key"

[[sales]]
id = "sneakers"
room = "drop"
stock = 5
`);

  server = await startRushgate(config, base);

  step("a blocker takes the room's only slot");
  const joined = await (await fetch(`${api}/rooms/drop/join`, { method: "POST" })).json();
  const blocker = joined.ticket;
  await until("the blocker is admitted", async () => {
    const p = await (await fetch(`${api}/rooms/drop/position`, { headers: { Authorization: `Bearer ${blocker}` } })).json();
    return p.state === "admitted";
  });

  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu"],
  });
  const phone = await (await browser.newContext({ viewport: { width: 420, height: 900 } })).newPage();
  const laptop = await (await browser.newContext({ viewport: { width: 900, height: 900 } })).newPage();
  phone.setDefaultTimeout(15_000);
  laptop.setDefaultTimeout(15_000);

  step("the phone waits on the product page at position 1");
  await phone.goto(`${base}/products/sneakers`);
  await phone.waitForSelector('#rg-page[data-state="waiting"]');
  const before = (await phone.textContent('[data-rg="position"]')).trim();
  if (before !== "1") throw new Error(`expected position 1, saw "${before}"`);

  step("the phone asks for a code: text, link and QR code appear");
  await phone.click(".move summary");
  await phone.click('[data-rg="move"]');
  await phone.waitForSelector('[data-rg="move-code"]:not([hidden])');
  const code = (await phone.textContent('[data-rg="move-text"]')).trim();
  if (!/^[2-9A-Z]{10}$/.test(code)) throw new Error(`code "${code}"`);
  const link = await phone.getAttribute('[data-rg="move-link"]', "href");
  if (!link.includes(`/claim?code=${code}`)) throw new Error(`link ${link}`);
  if (!(await phone.$('[data-rg="move-qr"] svg'))) throw new Error("no QR code shown");
  mkdirSync(shots, { recursive: true });
  await phone.screenshot({ path: join(shots, "transfer-code.png"), fullPage: true });

  step("the laptop opens the link and moves the place");
  await laptop.goto(link);
  await laptop.click("#go");
  await laptop.waitForURL(`${base}/products/sneakers`);
  await laptop.waitForSelector('#rg-page[data-state="waiting"]');
  const after = (await laptop.textContent('[data-rg="position"]')).trim();
  if (after !== before) throw new Error(`position moved from ${before} to ${after}`);

  step("the phone's page says the place moved");
  await phone.waitForSelector('#rg-page[data-state="transferred"]', { timeout: 20_000 });
  await phone.screenshot({ path: join(shots, "transfer-moved.png"), fullPage: true });

  step("the blocker leaves: the laptop, not the phone, reaches the product page");
  const left = await fetch(`${api}/rooms/drop/leave`, { method: "POST", headers: { Authorization: `Bearer ${blocker}` } });
  if (!left.ok) throw new Error(`leave failed: ${left.status}`);
  await laptop.waitForSelector("#buy", { timeout: 20_000 });
  await phone.goto(`${base}/products/sneakers`);
  const phoneState = await phone.getAttribute("#rg-page", "data-state");
  if (phoneState !== "transferred") throw new Error(`the phone sees "${phoneState}"`);

  step("transfer flow passed");
} catch (e) {
  console.error(`browser transfer test FAILED: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server) server.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
}
