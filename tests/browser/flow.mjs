// Browser test: headless Chromium (Debian package) through the whole flow of a drop.
//
// Starts the already-built rushgate (target/debug/rushgate) with a test config: the built-in demo
// shop behind a room with one slot, held by a "blocker" shopper, so the waiting page is really
// shown. Then: open the protected product page → the waiting page shows a position → the blocker
// leaves → the page is admitted and taken back to the product page → buy → order confirmation.
// A second room asks for a proof of work on every new place (pow = "always", 10 bits): its
// product page first shows the waiting page in its pow state, whose Web Worker solves the
// challenge with WebCrypto, and the browser reaches the product page with a pass.
// Screenshots go to target/browser/{waiting,confirmation,pow}.png. Any failed step exits non-zero.
//
// Usage: node tests/browser/flow.mjs   (RUSHGATE_BIN and CHROMIUM override the paths)

import { mkdirSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { chromiumPath, freePort, shots, startRushgate, step, until } from "./harness.mjs";

const dir = mkdtempSync(join(tmpdir(), "rushgate-browser-"));
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
ticket_secret = "browser-test-ticket-secret"

[shop]
api_key = "browser-test-shop-key"

# Listed first: its protect rule must win over the drop's /products/*.
[[rooms]]
id = "guarded"
admit_per_minute = 6000
max_active = 100
upstream = "builtin:demo"
protect = ["/products/hoodies"]
pow = "always"
pow_min_bits = 10
pow_max_bits = 10

[[rooms]]
id = "drop"
admit_per_minute = 6000
max_active = 1
idle_timeout_seconds = 30
message = "Browser test drop: keep this page open."
messages = { ko = "브라우저 테스트 드롭: 이 페이지를 열어 두세요." }
upstream = "builtin:demo"
protect = ["/products/*"]
bypass = ["*.css", "/health"]

[[sales]]
id = "sneakers"
room = "drop"
stock = 5

[[sales]]
id = "hoodies"
room = "guarded"
stock = 5
`);

  server = await startRushgate(config, base);

  step("a blocker takes the room's only slot");
  const joined = await (await fetch(`${api}/rooms/drop/join`, { method: "POST" })).json();
  const blocker = joined.ticket;
  if (!blocker) throw new Error(`join gave no ticket: ${JSON.stringify(joined)}`);
  await until("the blocker is admitted", async () => {
    const p = await (await fetch(`${api}/rooms/drop/position`, { headers: { Authorization: `Bearer ${blocker}` } })).json();
    return p.state === "admitted";
  });

  // A second shopper waits ahead of the browser, so the browser's position moves (2 → 1)
  // while it only listens.
  const ahead = (await (await fetch(`${api}/rooms/drop/join`, { method: "POST" })).json()).ticket;
  if (!ahead) throw new Error("the second join gave no ticket");

  step("launch chromium");
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu"],
  });
  // A Korean browser: Accept-Language ko-KR for the page and its event stream.
  const page = await browser.newPage({ viewport: { width: 420, height: 860 }, locale: "ko-KR" });
  page.setDefaultTimeout(15_000);
  // What the waiting page asks the API while it waits: the event stream, and any poll.
  const asked = { events: 0, polls: 0 };
  page.on("request", (r) => {
    if (r.url().endsWith("/rooms/drop/events")) asked.events += 1;
    if (r.url().endsWith("/rooms/drop/position")) asked.polls += 1;
  });

  step("open the protected product page: the waiting page shows a position, in Korean");
  const response = await page.goto(`${base}/products/sneakers`);
  if (response.status() !== 200) throw new Error(`waiting page status ${response.status()}`);
  await page.waitForSelector('#rg-page[data-state="waiting"]');
  const position = (await page.textContent('[data-rg="position"]')).trim();
  if (position !== "2") throw new Error(`expected position 2, saw "${position}"`);
  const lang = await page.getAttribute("html", "lang");
  if (lang !== "ko") throw new Error(`<html lang="${lang}">, expected ko`);
  for (const [sel, want] of [
    ['[data-rg="headline"]', "대기 중입니다"],
    ["#rg-pos-label", "나의 대기 순서"],
    ['[data-rg="message"]', "브라우저 테스트 드롭: 이 페이지를 열어 두세요."],
  ]) {
    const got = (await page.textContent(sel)).trim();
    if (got !== want) throw new Error(`${sel}: "${got}", expected "${want}"`);
  }
  const live = await page.getAttribute('[data-rg="position"]', "aria-live");
  if (live !== "polite") throw new Error("position is not announced (aria-live)");
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, "waiting.png"), fullPage: true });

  step("the page listens to the place's event stream instead of polling");
  await until("the event stream is open", async () => asked.events >= 1);
  const pollsBefore = asked.polls;

  step("the blocker leaves: the shopper ahead is admitted, the page shows position 1 without a poll");
  const left = await fetch(`${api}/rooms/drop/leave`, { method: "POST", headers: { Authorization: `Bearer ${blocker}` } });
  if (!left.ok) throw new Error(`leave failed: ${left.status}`);
  await page.waitForFunction(() => document.querySelector('[data-rg="position"]').textContent.trim() === "1");
  if (asked.polls !== pollsBefore) throw new Error(`the waiting page polled ${asked.polls - pollsBefore} times while it listened`);
  const headline = (await page.textContent('[data-rg="headline"]')).trim();
  if (headline !== "대기 중입니다") throw new Error(`headline after an event: "${headline}"`);

  step("the shopper ahead leaves: the browser is admitted and redirected to the product page");
  const aheadLeft = await fetch(`${api}/rooms/drop/leave`, { method: "POST", headers: { Authorization: `Bearer ${ahead}` } });
  if (!aheadLeft.ok) throw new Error(`leave failed: ${aheadLeft.status}`);
  await page.waitForSelector("#buy", { timeout: 20_000 });
  if (!page.url().endsWith("/products/sneakers")) throw new Error(`admitted to ${page.url()}`);
  // The admission came on the stream; the one poll after it picks up the pass cookie.
  if (asked.polls - pollsBefore > 1) throw new Error(`the waiting page polled ${asked.polls - pollsBefore} times`);
  const passInfo = await page.textContent("#pass-info");
  if (!passInfo.includes("admitted")) throw new Error(`product page without pass: ${passInfo}`);

  step("buy: the order confirmation shows the reservation");
  await page.click("#buy");
  await page.waitForSelector("#confirmation");
  if (!/\/orders\/sneakers\./.test(page.url())) throw new Error(`confirmation at ${page.url()}`);
  const reservation = (await page.textContent("#reservation")).trim();
  if (!reservation.startsWith("sneakers.")) throw new Error(`reservation "${reservation}"`);
  await page.screenshot({ path: join(shots, "confirmation.png"), fullPage: true });

  step("a room with pow = always: the waiting page solves the challenge in a Web Worker");
  const powPage = await browser.newPage({ viewport: { width: 420, height: 860 } });
  powPage.setDefaultTimeout(15_000);
  const workers = [];
  powPage.on("worker", (w) => workers.push(w.url()));
  // Hold the worker script back until the pow state has been looked at (a 10-bit challenge is
  // solved in milliseconds, and the page then moves on by itself).
  let release;
  const held = new Promise((r) => { release = r; });
  await powPage.route("**/_rushgate/v1/pow/worker.js", async (route) => { await held; await route.continue(); });
  await powPage.goto(`${base}/products/hoodies`);
  await powPage.waitForSelector('#rg-page[data-state="pow"]');
  if (!(await powPage.isVisible('[data-rg="pow-progress"]'))) throw new Error("no progress bar in the pow state");
  if (!(await powPage.evaluate(() => isSecureContext && !!crypto.subtle))) throw new Error("no WebCrypto on the page");
  await powPage.screenshot({ path: join(shots, "pow.png"), fullPage: true });
  const before = await (await fetch(`${api}/rooms/guarded`)).json();
  if (before.last_number !== 0) throw new Error(`a place was made before the work: ${JSON.stringify(before)}`);
  release();

  step("the answer joins: the browser reaches the product page with a pass");
  await powPage.waitForSelector("#buy", { timeout: 20_000 });
  if (!powPage.url().endsWith("/products/hoodies")) throw new Error(`pow room led to ${powPage.url()}`);
  const powPass = await powPage.textContent("#pass-info");
  if (!powPass.includes("admitted")) throw new Error(`product page without pass: ${powPass}`);
  if (!workers.some((u) => u.endsWith("/_rushgate/v1/pow/worker.js"))) throw new Error(`no worker ran: ${workers}`);
  const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const solved = metrics.split("\n").find((l) => l.startsWith("rushgate_pow_solved_total") && l.includes('room="guarded"'));
  if (!solved || !solved.endsWith(" 1")) throw new Error(`server did not count one solution: ${solved}`);

  step(`browser flow passed; screenshots in ${shots}`);
} catch (e) {
  console.error(`browser test FAILED: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server) server.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
}
