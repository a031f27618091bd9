// Browser tests of the registry's pages, in headless Chromium (Debian's, driven by
// playwright-core). Started by server/tests/web_pages.rs, which runs two seeded registries and
// passes them in the environment:
//   REGISTRY_URL, SEED (JSON: dataset digest, commentary ids per kind, run ids, hostile name),
//   LOCKED_URL + LOCKED_TOKEN (a registry whose writes need a token), UPLOAD_OK + UPLOAD_BAD
//   (archives to upload), SCREENSHOTS (folder), CHROMIUM (the browser binary).
// Prints "ok - name" / "not ok - name: why" per test and exits non-zero when any failed.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import assert from "node:assert/strict";

const base = process.env.REGISTRY_URL;
const locked = process.env.LOCKED_URL;
const seed = JSON.parse(process.env.SEED);
const shots = process.env.SCREENSHOTS;
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox"],
});

const results = [];
// Expected HTTP errors (a 404 page, a refused upload) are logged by Chromium as console errors;
// a test that provokes one says which statuses it expects.
async function test(name, body, { width = 1200, expectStatuses = [] } = {}) {
  const context = await browser.newContext({ viewport: { width, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => { if (m.type() === "error") problems.push("console error: " + m.text()); });
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  try {
    await body(page, problems);
    const expected = (p) => expectStatuses.some((s) => p.includes(`status of ${s}`));
    assert.deepEqual(problems.filter((p) => !expected(p)), [], "no console errors");
    results.push({ name, ok: true });
    console.log("ok - " + name);
  } catch (err) {
    results.push({ name, ok: false });
    console.log("not ok - " + name + ": " + (err && err.stack || err));
    await page.screenshot({ path: `${shots}/FAILED-${name.replace(/\W+/g, "-")}.png`, fullPage: true }).catch(() => {});
  } finally {
    await context.close();
  }
}

async function visit(page, path, expectStatus = 200) {
  const response = await page.goto(base + path, { waitUntil: "networkidle" });
  assert.equal(response.status(), expectStatus, "status of " + path);
  return response;
}

async function shot(page, name) {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

await test("home lists datasets with short digests and escapes hostile names", async (page) => {
  await visit(page, "/");
  await shot(page, "home");
  const rows = await page.locator("table.list tbody tr").count();
  assert.ok(rows >= 2, "both seeded datasets are listed");
  assert.ok(await page.getByText(seed.digest.slice(7, 19)).count() >= 1, "the short digest is shown");
  assert.equal(await page.evaluate(() => window.__xss), undefined, "the hostile name did not run");
  assert.ok(await page.getByText(seed.hostile_name, { exact: true }).count() >= 1, "it shows as text");
  await page.fill("#q", "mnist");
  await page.click("form.search button");
  await page.waitForLoadState("networkidle");
  assert.equal(await page.locator("table.list tbody tr").count(), 1, "search by name");
});

await test("dataset page: examples, class balance, commentaries, runs, run form", async (page) => {
  await visit(page, "/datasets/" + seed.digest);
  await shot(page, "dataset");
  const images = page.locator("#examples img");
  assert.equal(await images.count(), 24);
  const loaded = await images.evaluateAll((all) => all.every((img) => img.complete && img.naturalWidth === 28));
  assert.ok(loaded, "every example image decoded as a 28x28 PNG");
  assert.ok((await images.first().getAttribute("alt")).includes("labelled"), "alt text names the label");
  assert.equal(await page.locator("#class-balance svg rect.bar").count(), 20, "10 classes x 2 splits");
  assert.ok(await page.locator("#class-balance svg text.axis-title").count() >= 2, "axis titles");
  for (const id of Object.values(seed.commentaries)) {
    assert.equal(await page.locator(`a[href="/commentaries/${id}"]`).count(), 1);
  }
  assert.ok(await page.locator("#run-form select[name=kind]").count() === 1);
});

await test("example weighting: curriculum chart, histogram, extreme examples", async (page) => {
  await visit(page, "/commentaries/" + seed.commentaries["example-weighting"]);
  await shot(page, "commentary-example-weighting");
  assert.equal(await page.locator("#curriculum svg polyline.series").count(), 10, "one line per class");
  assert.ok(await page.locator("#curriculum svg text.legend").count() === 10, "a legend");
  assert.ok(await page.locator("#weight-histogram svg rect.bin").count() > 0);
  assert.equal(await page.locator("figure.extremes").count(), 2);
  assert.ok(await page.locator("figure.extremes img").count() >= 2);
  assert.ok(await page.locator("#report-chart svg polyline.series").count() === 2, "baseline vs with");
  assert.ok((await page.locator("#cli-snippet").textContent()).includes("commentary pull --server"));
  assert.ok((await page.locator("#python-snippet").textContent()).includes("commentary.Registry("));
});

await test("label blending: a labelled C x C heatmap with values on hover", async (page) => {
  await visit(page, "/commentaries/" + seed.commentaries["label-blending"]);
  await shot(page, "commentary-label-blending");
  const cells = page.locator("#blend-heatmap svg rect.cell");
  assert.equal(await cells.count(), 100);
  const hover = await cells.nth(12).locator("title").textContent();
  assert.match(hover, /class: 1 \/ blended with: 2, \d\.\d{3}/);
  const labels = await page.locator("#blend-heatmap svg text.tick").allTextContents();
  for (const c of ["0", "9"]) assert.ok(labels.filter((t) => t === c).length >= 2, "class " + c + " on both axes");
  assert.equal(await page.locator("table.pairs").count(), 2, "most and least blended pairs");
  assert.ok(await page.locator("#report-chart svg polyline.series").count() === 3, "with random blending");
});

await test("attention masks: overlays with a toggle and an opacity slider", async (page) => {
  await visit(page, "/commentaries/" + seed.commentaries["attention-mask"]);
  const masks = page.locator("#mask-grid img.mask");
  assert.ok(await masks.count() > 0);
  const decoded = await page.locator("#mask-grid img").evaluateAll((all) => all.every((img) => img.complete && img.naturalWidth > 0));
  assert.ok(decoded, "images and masks decoded");
  await page.locator("#mask-opacity").fill("25");
  assert.equal(await masks.first().evaluate((m) => getComputedStyle(m).opacity), "0.25");
  await shot(page, "commentary-attention-mask");
  await page.locator("#show-masks").uncheck();
  assert.equal(await masks.first().evaluate((m) => getComputedStyle(m).display), "none");
  await page.locator("#show-masks").focus();
  await page.keyboard.press("Space");
  assert.notEqual(await masks.first().evaluate((m) => getComputedStyle(m).display), "none", "keyboard toggles back");
  assert.ok(await page.locator("#removal").count() === 1, "the removal test result");
});

await test("commentary page on a narrow screen", async (page) => {
  await visit(page, "/commentaries/" + seed.commentaries["label-blending"]);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, "no horizontal scrolling of the page (" + overflow + "px)");
  await shot(page, "narrow-commentary");
}, { width: 375 });

await test("a failed run shows why", async (page) => {
  await visit(page, "/runs/" + seed.failed_run);
  assert.equal((await page.locator("#run-state").textContent()).trim(), "failed");
  assert.match(await page.locator("#run-error").textContent(), /validation_examples/);
  await shot(page, "run-failed");
});

await test("unknown digests and ids get a friendly 404 page", async (page) => {
  await visit(page, "/datasets/sha256:" + "0".repeat(64), 404);
  assert.match(await page.locator("main").textContent(), /No dataset sha256:0+ is stored here/);
  await visit(page, "/commentaries/nope", 404);
  await visit(page, "/runs/nope", 404);
  await visit(page, "/no/such/page", 404);
  assert.ok(await page.locator("a[href='/']").count() >= 1, "a way back");
}, { expectStatuses: [404] });

await test("the upload form uploads, and shows the server's error for a bad archive", async (page) => {
  await visit(page, "/");
  await page.fill("#upload-name", "bad upload");
  await page.setInputFiles("#upload-file", process.env.UPLOAD_BAD);
  await page.click("#upload button[type=submit]");
  await page.locator("#upload .status.bad").waitFor();
  assert.match(await page.locator("#upload .status").textContent(), /Upload refused: not a usable dataset/);
  await page.fill("#upload-name", "uploaded from a page");
  await page.setInputFiles("#upload-file", process.env.UPLOAD_OK);
  await Promise.all([page.waitForURL(/\/datasets\/sha256:/), page.click("#upload button[type=submit]")]);
  assert.match(await page.locator("h1").textContent(), /uploaded from a page/);
}, { expectStatuses: [422] });

await test("the run page follows a run live over SSE", async (page) => {
  await visit(page, "/datasets/" + seed.digest);
  await page.selectOption("#run-form select[name=kind]", "example-weighting");
  await page.selectOption("#run-form select[name=student]", "mlp");
  await page.fill("#run-form input[name=meta_steps]", "4");
  await page.fill("#run-form input[name=inner_steps]", "5");
  await page.fill("#run-form input[name=eval_steps]", "0");
  await Promise.all([page.waitForURL(/\/runs\//), page.click("#run-form button[type=submit]")]);
  // Progress events arrive while the page is open, then the finished page links the result.
  await page.waitForFunction(() => Number(document.getElementById("run")?.dataset.events || 0) >= 1, null, { timeout: 120000 });
  await page.locator("#commentary-link").waitFor({ timeout: 180000 });
  assert.equal((await page.locator("#run-state").textContent()).trim(), "succeeded");
  assert.ok(await page.locator("#loss-chart svg polyline.series").count() === 2, "the loss chart");
  await shot(page, "run-succeeded");
});

await test("writes without a login are refused with a clear message, and work after logging in", async (page) => {
  let response = await page.goto(locked + "/datasets/" + seed.digest, { waitUntil: "networkidle" });
  assert.equal(response.status(), 200);
  await page.fill("#run-form input[name=eval_steps]", "0");
  await page.click("#run-form button[type=submit]");
  await page.locator("#run-form .status.bad").waitFor();
  assert.match(await page.locator("#run-form .status").textContent(), /needs a token.*Log in first/);
  await page.goto(locked + "/login");
  await page.fill("#token", "cmt_wrong");
  await page.click("form.card button");
  assert.match(await page.locator(".error-text").textContent(), /unknown or revoked/);
  await page.fill("#token", process.env.LOCKED_TOKEN);
  await Promise.all([page.waitForURL(locked + "/"), page.click("form.card button")]);
  assert.match(await page.locator("header .who").textContent(), /Signed in as/);
  await page.goto(locked + "/datasets/" + seed.digest, { waitUntil: "networkidle" });
  await page.fill("#run-form input[name=meta_steps]", "1");
  await page.fill("#run-form input[name=eval_steps]", "0");
  await Promise.all([page.waitForURL(/\/runs\//), page.click("#run-form button[type=submit]")]);
  await shot(page, "run-queued-after-login");
}, { expectStatuses: [401] });

await browser.close();
const failed = results.filter((r) => !r.ok).length;
console.log(`web: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
