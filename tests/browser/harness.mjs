// Shared by the browser tests: paths, free ports, waiting on a condition within the test's one
// minute, step logs, and starting the already-built rushgate on a config file.

import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const bin = process.env.RUSHGATE_BIN || join(root, "target/debug/rushgate");
export const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
export const shots = join(root, "target/browser");
// Every test stops by itself: nothing waits past a minute from the start of the script.
const deadline = Date.now() + 60_000;

export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => ok(port)); });
  });
}

export async function until(what, check, timeoutMs = 15_000) {
  const end = Math.min(Date.now() + timeoutMs, deadline);
  for (;;) {
    try { const v = await check(); if (v) return v; } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function step(name) { console.log(`==> ${name}`); }

// Starts `bin serve --config <config>` and waits until `${base}/health` answers; its stderr is
// printed if it exits with an error.
export async function startRushgate(config, base) {
  step(`start ${bin}`);
  const server = spawn(bin, ["serve", "--config", config], { stdio: ["ignore", "ignore", "pipe"] });
  let serverLog = "";
  server.stderr.on("data", (d) => { serverLog += d; });
  server.on("exit", (code) => { if (code !== null && code !== 0) console.error(serverLog); });
  await until("rushgate answers", async () => (await fetch(`${base}/health`)).ok);
  return server;
}
