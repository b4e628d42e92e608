// The admin interface in headless Chromium, as its users use it: sign-in
// through the OpenID provider, the investigation, the help-desk reset, the
// live overview, another organisation's investigator, CSRF, CSP and an
// accessibility check of every page. Screenshots go to OUT.
//
// Environment: BASE (http://localhost:PORT), TENANT, OTHER_TENANT,
// INVESTIGATOR, OUTSIDER, HELPDESK, ORG_READER (logins), TARGET (the
// campaign's locked account), SUCCESS_ACCOUNT (its success after
// failures), SPRAY_SOURCE, RECORD_SQL_CMD (a JSON argv recording new
// events), PROVIDER (the provider's origin), OUT, CHROMIUM.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { readFileSync, mkdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const env = process.env;
const base = env.BASE;
const tenant = env.TENANT;
const out = env.OUT;
mkdirSync(out, { recursive: true });
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

let failures = 0;
function check(ok, what) {
  console.log(`${ok ? "ok" : "FAILED"} - ${what}`);
  if (!ok) failures++;
}

const browser = await chromium.launch({
  executablePath: env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});

// A signed-in browser context for `login`, recording CSP violations.
async function signIn(login) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) =>
      window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`),
    );
  });
  const page = await context.newPage();
  page.on("dialog", async (d) => {
    check(false, `a page ran script from data: ${d.message()}`);
    await d.dismiss();
  });
  page.cspConsole = [];
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) page.cspConsole.push(m.text());
  });
  await page.goto(`${base}/admin/`);
  await page.getByRole("link", { name: /sign in/i }).click();
  await page.waitForURL((u) => u.toString().startsWith(env.PROVIDER));
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', "any password");
  await page.click('button[type="submit"]');
  // The provider asks once to authorise the interface's scope.
  const consent = page.getByRole("button", { name: /continue/i });
  const landed = await Promise.race([
    page.waitForURL((u) => u.toString().startsWith(`${base}/admin/`)).then(() => true),
    consent.waitFor().then(() => false),
  ]);
  if (!landed) {
    await consent.click();
  }
  try {
    await page.waitForURL((u) => u.toString().startsWith(`${base}/admin/`), { timeout: 15000 });
  } catch (e) {
    await page.screenshot({ path: `${out}/sign-in-failed-${login}.png`, fullPage: true });
    throw new Error(`sign-in of ${login} stopped at ${page.url()}: ${(await page.locator("body").innerText()).slice(0, 500)}`);
  }
  return { context, page };
}

async function cspViolations(page) {
  const fromPage = await page.evaluate(() => window.__csp ?? []);
  return fromPage.concat(page.cspConsole);
}

async function axe(page, name) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: ["wcag2a", "wcag2aa", "best-practice"] }),
  );
  const serious = result.violations.filter((v) => ["serious", "critical"].includes(v.impact));
  check(serious.length === 0, `${name}: no serious accessibility violations ${serious.map((v) => `${v.id} (${v.nodes.length})`).join(", ")}`);
}

async function visit(page, path, name) {
  const r = await page.goto(`${base}${path}`);
  await page.screenshot({ path: `${out}/${name}.png`, fullPage: true });
  await axe(page, name);
  return r;
}

const t = encodeURIComponent(tenant);

// 1. The investigator signs in and lands on the tenant's overview.
const inv = await signIn(env.INVESTIGATOR);
check(/\/admin\/t\/.+\/$/.test(inv.page.url()), `sign-in lands on the overview (${inv.page.url()})`);
check((await inv.page.locator("h1").textContent()) === "Overview", "the overview's heading");
const cookies = await inv.context.cookies();
const session = cookies.find((c) => c.name === "authaudit_session");
check(session && session.httpOnly && session.secure && session.sameSite === "Lax", "the session cookie is HttpOnly, Secure, SameSite=Lax");
check(!cookies.some((c) => /eyJ/.test(c.value)), "no token in a cookie");
await visit(inv.page, `/admin/t/${t}/`, "overview");
const overviewText = await inv.page.locator("#live").innerText();
check(overviewText.includes(env.TARGET), "the overview lists the locked account");
check(/Locked accounts: [1-9]/.test(overviewText), "the overview counts locked accounts");

// 2. The overview updates when new events arrive (no reload).
const before = await inv.page.locator("#live").getAttribute("data-updated");
const legendBefore = await inv.page.locator(".legend").innerText();
execFileSync(JSON.parse(env.RECORD_SQL_CMD)[0], JSON.parse(env.RECORD_SQL_CMD).slice(1));
await inv.page.waitForFunction(
  ([b, l]) => {
    const live = document.getElementById("live");
    const legend = document.querySelector(".legend");
    return live.getAttribute("data-updated") !== b && legend && legend.innerText !== l;
  },
  [before, legendBefore],
  { timeout: 20000 },
);
check(true, "the overview updated without a reload after new events");
check((await inv.page.locator(".legend").innerText()).includes("login_failed"), "the chart's legend names the failures");

// 3. Campaigns: the demo campaign's accounts and its success after failures.
await visit(inv.page, `/admin/t/${t}/campaigns`, "campaigns");
const campaigns = await inv.page.locator("main").innerText();
check(campaigns.includes("Password spray"), "the spray is a campaign");
check(campaigns.includes(env.TARGET), "the campaign names the targeted account");
check(campaigns.includes(env.SPRAY_SOURCE), "the campaign names its source");
const campaignRows = await inv.page.locator("main table tbody tr").count();
check(campaignRows >= 1 && campaignRows <= 5, `campaigns, not rows (${campaignRows} lines)`);

// 4. The period report, the account, the source, search and evidence.
await visit(inv.page, `/admin/t/${t}/report`, "report");
const report = await inv.page.locator("main").innerText();
check(report.includes(env.SUCCESS_ACCOUNT), "the report lists the success after failures");
check(/Chain verification: intact/.test(report), "the report shows the chain verified");
check((await inv.page.locator("svg.chart text.axis").count()) > 4, "the report's chart has axis labels");
await visit(inv.page, `/admin/t/${t}/accounts/${encodeURIComponent(env.TARGET)}`, "account");
const account = await inv.page.locator("main").innerText();
check(/locked since/.test(account), "the account view shows the lock");
check((await inv.page.locator("form[action$='/reset']").count()) === 0, "an investigator gets no reset button");
await inv.page.goto(`${base}/admin/t/${t}/accounts/${encodeURIComponent(env.SUCCESS_ACCOUNT)}`);
const succ = await inv.page.locator("main").innerText();
check(/after 4 failures/.test(succ), "the success after failures is marked in the account's timeline");
check(/token_issued/.test(succ) && /token [0-9a-f]{16}…, jti session-77, expires 2100-01-01/.test(succ),
  "the token issued is in the timeline by fingerprint and claims, never the token");
check(!succ.includes("c2lnbmF0dXJl"), "no token in the page");
await visit(inv.page, `/admin/t/${t}/sources/${encodeURIComponent(env.SPRAY_SOURCE)}`, "source");
check((await inv.page.locator("main").innerText()).includes(env.SUCCESS_ACCOUNT), "the source view lists the accounts it tried");
await visit(inv.page, `/admin/t/${t}/search?type=login_failed&limit=5`, "search");
check((await inv.page.locator("main table tbody tr").count()) === 5, "search pages by the limit");
check((await inv.page.locator("a[rel=next]").count()) === 1, "search offers the next page");
const csv = await inv.page.request.get(`${base}/admin/t/${t}/export?format=csv&type=login_failed`);
const csvText = await csv.text();
check(csv.status() === 200 && csvText.startsWith("seq,occurred_at") && csvText.split("\r\n").length > 10, "the CSV export");
await visit(inv.page, `/admin/t/${t}/evidence`, "evidence");
check((await inv.page.locator("main").innerText()).includes("Intact"), "the evidence page verifies the chain");
// With the witness's signed checkpoint the bundle downloads (saved for
// tests/e2e/admin.rs to verify offline); without one the page says why.
const bundle = await inv.page.request.get(`${base}/admin/t/${t}/evidence/1`);
const bundleText = await bundle.text();
check(
  env.WITNESSED === "1"
    ? bundle.status() === 200 && (bundle.headers()["content-disposition"] ?? "").includes("attachment")
    : bundle.status() === 409 && /checkpoint/.test(bundleText),
  `an evidence bundle downloads once witnessed, and until then the page says why (${bundle.status()})`,
);
if (bundle.status() === 200) writeFileSync(`${out}/evidence-1.json`, bundleText);

// An account name written to attack the page is shown as text.
await inv.page.goto(`${base}/admin/t/${t}/accounts/${encodeURIComponent(env.HOSTILE)}`);
check((await inv.page.locator("h1").textContent()) === `Account ${env.HOSTILE}`, "a hostile account name is shown as text");
check((await inv.page.locator("main img").count()) === 0, "and makes no element");

// 5. CSRF: a cross-site form post is refused; so is a same-site post
// without the session's token.
const attackerPage = await inv.context.newPage();
await attackerPage.goto(`${env.PROVIDER}/.well-known/openid-configuration`);
const [crossSite] = await Promise.all([
  attackerPage.waitForResponse((r) => r.url().includes("/reset"), { timeout: 10000 }),
  attackerPage.evaluate((action) => {
    const f = document.createElement("form");
    f.method = "POST";
    f.action = action;
    for (const [k, v] of [["ticket", "EVIL-1"], ["reason", "cross-site"], ["csrf", "guess"]]) {
      const i = document.createElement("input");
      i.name = k;
      i.value = v;
      f.appendChild(i);
    }
    document.body.appendChild(f);
    f.submit();
  }, `${base}/admin/t/${t}/accounts/${encodeURIComponent(env.TARGET)}/reset`),
]);
check([401, 403].includes(crossSite.status()), `a cross-site form post is refused (${crossSite.status()})`);
const noToken = await inv.page.request.post(`${base}/admin/t/${t}/accounts/${encodeURIComponent(env.TARGET)}/reset`, {
  form: { ticket: "X-1", reason: "no token" },
  headers: { Origin: base },
});
check(noToken.status() === 403, `a post without the CSRF token is refused (${noToken.status()})`);
check((await cspViolations(inv.page)).length === 0, `no CSP violations: ${(await cspViolations(inv.page)).join("; ")}`);

// 6. The help desk resets the account; the reset is in its timeline.
const desk = await signIn(env.HELPDESK);
await desk.page.goto(`${base}/admin/t/${t}/accounts/${encodeURIComponent(env.TARGET)}`);
await desk.page.fill('input[name="ticket"]', "INC-4711");
await desk.page.fill('input[name="reason"]', "caller verified by phone");
await desk.page.screenshot({ path: `${out}/reset-form.png`, fullPage: true });
await desk.page.click("form[action$='/reset'] button[type=submit]");
try {
  await desk.page.waitForURL(/reset=1/, { timeout: 10000 });
} catch (e) {
  throw new Error(`the reset stopped at ${desk.page.url()}: ${(await desk.page.locator("body").innerText()).slice(0, 500)}`);
}
const after = await desk.page.locator("main").innerText();
check(/The reset is recorded/.test(after), "the reset is confirmed");
check(/lockout_reset/.test(after) && /ticket INC-4711/.test(after), "the reset is in the account's timeline with its ticket");
check(/not locked/.test(after), "the account is no longer locked");
await desk.page.screenshot({ path: `${out}/account-after-reset.png`, fullPage: true });
check((await cspViolations(desk.page)).length === 0, "no CSP violations for the help desk");

// 7. Another tenant's investigator sees nothing of this tenant.
const other = await signIn(env.OUTSIDER);
check(!other.page.url().includes(`/t/${t}/`), "another tenant's investigator lands elsewhere");
check(!(await other.page.locator("main").innerText()).includes(env.TARGET), "their overview shows nothing of the campaign");
await other.page.screenshot({ path: `${out}/other-tenant.png`, fullPage: true });
for (const path of ["/", "/campaigns", "/report", `/accounts/${encodeURIComponent(env.TARGET)}`, "/evidence"]) {
  const r = await other.page.goto(`${base}/admin/t/${t}${path}`);
  check(r.status() === 403, `another tenant's investigator gets 403 at ${path} (${r.status()})`);
}

// 8. An investigator of another organisation of the tenant sees none of
// the campaign's events (they belong to the campaign's organisation).
const org = await signIn(env.ORG_READER);
await org.page.goto(`${base}/admin/t/${t}/campaigns`);
const orgCampaigns = await org.page.locator("main").innerText();
check(!orgCampaigns.includes(env.TARGET), "another organisation's campaigns page shows nothing of it");
const orgAccount = await org.page.goto(`${base}/admin/t/${t}/accounts/${encodeURIComponent(env.TARGET)}`);
check(orgAccount.status() === 403, `another organisation's direct URL to the account gives 403 (${orgAccount.status()})`);

// 9. Signing out ends the session.
await inv.page.goto(`${base}/admin/t/${t}/`);
await inv.page.getByRole("button", { name: /sign out/i }).click();
await inv.page.waitForURL(/signed-out/);
const afterOut = await inv.page.goto(`${base}/admin/t/${t}/`);
check(afterOut.status() === 401, "after signing out the pages ask to sign in");

await browser.close();
console.log(failures === 0 ? "all checks passed" : `${failures} checks failed`);
process.exit(failures === 0 ? 0 : 1);
