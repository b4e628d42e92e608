// Stored markup in the admin interface, in headless Chromium: every page
// of PAGES (paths, a JSON array) is opened with the session cookie
// SESSION; no dialog may fire, no element an attacker named (`xss-*`, an
// `img` or `script` from data) may exist, and no CSP violation may be
// reported. The overview (LIVE) is kept open until its panels have been
// replaced by the live fragment at least once, which is parsed as HTML.
//
// Environment: BASE (http://localhost:PORT), SESSION, PAGES, LIVE, CHROMIUM.
import { chromium } from "playwright-core";

const env = process.env;
const base = env.BASE;
let failures = 0;
function check(ok, what) {
  console.log(`${ok ? "ok" : "FAILED"} - ${what}`);
  if (!ok) failures++;
}

const browser = await chromium.launch({
  executablePath: env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const context = await browser.newContext();
await context.addCookies([
  {
    name: "authaudit_session",
    value: env.SESSION,
    domain: "localhost",
    path: "/admin",
    httpOnly: true,
    secure: true,
    sameSite: "Lax",
  },
]);
await context.addInitScript(() => {
  window.__csp = [];
  document.addEventListener("securitypolicyviolation", (e) =>
    window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`),
  );
});
const page = await context.newPage();
const dialogs = [];
page.on("dialog", async (d) => {
  dialogs.push(d.message());
  await d.dismiss();
});

async function planted() {
  return page.evaluate(() =>
    Array.from(document.querySelectorAll("*"))
      .filter((e) => e.tagName.toLowerCase().startsWith("xss") || (e.tagName === "IMG" && e.getAttribute("src") === "x") || (e.tagName === "SCRIPT" && !e.src) || Array.from(e.attributes).some((a) => a.name.startsWith("on") || a.name === "a"))
      .map((e) => e.outerHTML.slice(0, 80)),
  );
}

for (const path of JSON.parse(env.PAGES)) {
  const r = await page.goto(`${base}${path}`);
  check(r.status() === 200, `${path} opens (${r.status()})`);
  const found = await planted();
  check(found.length === 0, `${path}: no element from data ${found.join(" | ")}`);
  const csp = await page.evaluate(() => window.__csp);
  check(csp.length === 0, `${path}: no CSP violation ${csp.join("; ")}`);
}

// The live overview: its panels replaced by the fragment, still inert.
await page.goto(`${base}${env.LIVE}`);
await page.waitForFunction(() => document.getElementById("live")?.getAttribute("data-updated"), null, {
  timeout: 20000,
});
const found = await planted();
check(found.length === 0, `the refreshed overview: no element from data ${found.join(" | ")}`);
check((await page.locator("#live").innerText()).includes("<xss-locked>"), "the refreshed overview shows the hostile name as text");
check(dialogs.length === 0, `no dialog fired ${dialogs.join("; ")}`);

await browser.close();
console.log(failures === 0 ? "all checks passed" : `${failures} checks failed`);
process.exit(failures === 0 ? 0 : 1);
