// Runs cross-origin fetches in a real browser and prints, as JSON on
// stdout, what each page's script saw: the status and body, or the error
// the browser raised (a CORS refusal is a TypeError with no detail), plus
// the browser's own console messages, which say why it refused.
//
// Usage: node cors.mjs '<json>' where <json> is
//   {"chromium": "/usr/bin/chromium",
//    "visits": [{"name": "...", "page": "http://127.0.0.1:1234/",
//                "fetches": [{"name": "...", "url": "...", "headers": {...}, "credentials": "include"}]}]}
// Output: {"browser": "<version>", "visits": [{"name", "page", "results": [{"name", "status", "body"} |
//          {"name", "error": {"name", "message"}}], "console": ["..."]}]}
// Exits 1 with {"harness_error": "..."} when the browser cannot be driven at all.

import { chromium } from 'playwright-core';

const DEADLINE_MS = 60_000;

function fail(message) {
  process.stdout.write(JSON.stringify({ harness_error: message }) + '\n');
  process.exit(1);
}

const timer = setTimeout(() => fail(`no result after ${DEADLINE_MS} ms`), DEADLINE_MS);

let input;
try {
  input = JSON.parse(process.argv[2] ?? '');
} catch (error) {
  fail(`the argument is not JSON: ${error.message}`);
}

// Chromium's sandbox cannot start as root; the test machine runs as root.
const args = process.getuid?.() === 0 ? ['--no-sandbox'] : [];
let browser;
try {
  browser = await chromium.launch({ executablePath: input.chromium, headless: true, args });
} catch (error) {
  fail(`chromium did not start from ${input.chromium}: ${error.message}`);
}

const output = { browser: browser.version(), visits: [] };
try {
  for (const visit of input.visits) {
    // A fresh context per visit: no preflight cache or cookies carried over.
    const context = await browser.newContext();
    const page = await context.newPage();
    const consoleLines = [];
    page.on('console', (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
    const landed = await page.goto(visit.page);
    if (!landed || !landed.ok()) {
      fail(`the page ${visit.page} did not load: ${landed ? landed.status() : 'no response'}`);
    }
    const results = [];
    for (const call of visit.fetches) {
      const result = await page.evaluate(async ({ url, headers, credentials }) => {
        try {
          const response = await fetch(url, { headers, credentials, cache: 'no-store' });
          return { status: response.status, body: await response.text() };
        } catch (error) {
          return { error: { name: error.name, message: error.message } };
        }
      }, call);
      results.push({ name: call.name, ...result });
    }
    // Chromium logs why it refused a fetch just after the promise settles;
    // the pause only completes that explanation, no result depends on it.
    await page.waitForTimeout(200);
    output.visits.push({ name: visit.name, page: page.url(), origin: await page.evaluate(() => origin), results, console: consoleLines });
    await context.close();
  }
} catch (error) {
  await browser.close().catch(() => {});
  fail(`driving the browser failed: ${error.stack ?? error}`);
}
await browser.close();
clearTimeout(timer);
process.stdout.write(JSON.stringify(output) + '\n');
