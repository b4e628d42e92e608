// Screenshots of the admin interface against `make demo`'s campaign, for
// docs/admin.md: `node tests/ui/demo-screenshots.mjs URL OUT`, where URL is
// the interface's address `make demo` printed.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [base, out] = [process.argv[2].replace(/\/admin\/?$/, ""), process.argv[3]];
mkdirSync(out, { recursive: true });
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
await page.goto(`${base}/admin/`);
await page.getByRole("link", { name: /sign in/i }).click();
await page.fill('input[name="login"]', "helpdesk");
await page.fill('input[name="password"]', "any");
await page.click('button[type="submit"]');
const consent = page.getByRole("button", { name: /continue/i });
await Promise.race([page.waitForURL(/\/admin\//), consent.waitFor().then(() => consent.click())]);
await page.waitForURL(/\/admin\/t\//);
const period = process.env.PERIOD ?? "";
for (const [name, path] of [
  ["demo-overview", "/"],
  ["demo-campaigns", `/campaigns?${period}`],
  ["demo-report", `/report?${period}`],
  ["demo-search", "/search?type=account_locked&limit=20"],
]) {
  const r = await page.goto(`${base}/admin/t/agency-1${path}`);
  await page.screenshot({ path: `${out}/${name}.png`, fullPage: true });
  console.log(name, r.status());
}
const first = await page.locator("main table tbody tr td a").first().textContent();
const r = await page.goto(`${base}/admin/t/agency-1/accounts/${encodeURIComponent(first)}`);
await page.screenshot({ path: `${out}/demo-account.png`, fullPage: true });
console.log("demo-account", first, r.status());
await browser.close();
