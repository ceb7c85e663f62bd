// The eventbus dashboard: hash-routed pages over the /v1 REST API, no framework, no build step.
//
// Everything the server returns is hostile data (event payloads, response bodies, header values, names). It
// reaches the page only through `el()` and `Node.append()`, which create text nodes: never innerHTML, never an
// attribute that can navigate (`el()` refuses an href that is not a hash link). The page's CSP forbids inline
// script on top of that.

const KEY_STORAGE = "eventbus.api_key"; // sessionStorage: gone when the tab closes
const API = new URL("../v1/", location.href); // the dashboard lives at <prefix>/ui/, the API at <prefix>/v1/
const PAGE_SIZE = 50;
const RESEND_POLL_MS = 400;
const RESEND_POLL_LIMIT = 75; // 30 s

const main = document.getElementById("main");
const banner = document.getElementById("banner");
const nav = document.getElementById("nav");
const forgetButton = document.getElementById("forget-key");
const enc = encodeURIComponent;

// -- building the DOM safely ---------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = String(value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "href" && !String(value).startsWith("#")) throw new Error(`refusing href ${value}`);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child)); // a string becomes a text node
  }
  return node;
}

function link(hash, text, attrs = {}) {
  return el("a", { ...attrs, href: hash }, text);
}

function badge(text, tone = "neutral") {
  return el("span", { class: `badge ${tone}` }, text);
}

function code(text) {
  return el("code", {}, text);
}

function pre(text, attrs = {}) {
  return el("pre", attrs, text); // textContent: `<script>` in a payload stays text
}

function section(title, ...children) {
  return el("section", { class: "panel" }, el("h2", {}, title), ...children);
}

// A heading is its text, or [text, class] ("num" right-aligns a numeric column).
function table(headings, rows, attrs = {}) {
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      attrs,
      el("thead", {}, el("tr", {}, headings.map((h) => (Array.isArray(h) ? el("th", { class: h[1] }, h[0]) : el("th", {}, h))))),
      el("tbody", {}, rows),
    ),
  );
}

function definitions(pairs, attrs = {}) {
  return el(
    "dl",
    { class: "facts", ...attrs },
    pairs.filter(Boolean).map(([term, value]) => [el("dt", {}, term), el("dd", {}, value ?? "—")]),
  );
}

function empty(text) {
  return el("p", { class: "empty" }, text);
}

// -- formatting -----------------------------------------------------------------------------------------------

function when(iso) {
  if (!iso) return el("span", { class: "muted" }, "—");
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return String(iso);
  const shown = moment.toISOString().slice(0, 19).replace("T", " ");
  return el("span", { class: "time", title: iso }, shown, el("span", { class: "ago" }, relative(moment)));
}

function relative(moment) {
  const seconds = Math.round((moment.getTime() - Date.now()) / 1000);
  const size = Math.abs(seconds);
  const span =
    size < 60 ? `${size}s` : size < 3600 ? `${Math.round(size / 60)}m` : size < 86400 ? `${Math.round(size / 3600)}h` : `${Math.round(size / 86400)}d`;
  return size < 5 ? "now" : seconds < 0 ? `${span} ago` : `in ${span}`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const units = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
  const parts = [];
  let left = Math.round(seconds);
  for (const [unit, size] of units) {
    if (left >= size) {
      parts.push(`${Math.floor(left / size)}${unit}`);
      left %= size;
    }
  }
  return parts.length ? parts.slice(0, 2).join(" ") : "0s";
}

function successRate(stats) {
  const finished = stats.succeeded + stats.dead;
  if (!finished) return { text: "—", tone: "neutral" };
  const rate = (100 * stats.succeeded) / finished;
  const text = rate === 100 || rate === 0 ? `${rate}%` : `${rate.toFixed(1)}%`;
  return { text, tone: rate >= 99 ? "good" : rate >= 90 ? "warn" : "bad" };
}

function pretty(value) {
  if (typeof value === "string") {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

const TONES = {
  active: "good", succeeded: "good", closed: "good", delivered: "good",
  paused: "warn", pending: "warn", leased: "warn", open: "bad", disabled: "bad", dead: "bad", deleted: "neutral",
  retry: "warn", failed: "bad", held: "warn", in_flight: "warn", not_created: "neutral", not_matched: "neutral",
  filtered: "neutral",
};

function stateBadge(state) {
  return badge(state, TONES[state] || "neutral");
}

function attemptResult(attempt) {
  if (attempt.status_code !== null && attempt.status_code !== undefined) {
    const ok = attempt.status_code >= 200 && attempt.status_code < 300;
    return badge(`HTTP ${attempt.status_code}`, ok ? "good" : "bad");
  }
  return badge(attempt.error_class || "error", "bad");
}

function excerpt(attempt) {
  if (attempt.response_body_base64) return el("span", { class: "muted" }, `binary body (${attempt.response_body_base64.length} base64 chars)`);
  const text = attempt.response_body || attempt.error || "";
  if (!text) return el("span", { class: "muted" }, "(empty)");
  return el("code", { class: "excerpt", title: text.slice(0, 2000) }, text.length > 160 ? `${text.slice(0, 160)}…` : text);
}

function localInput(iso) {
  if (!iso) return "";
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return "";
  return new Date(moment.getTime() - moment.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

function isoFromLocal(value) {
  return value ? new Date(value).toISOString() : "";
}

// -- the API --------------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

class Stale extends Error {} // the operator navigated away meanwhile: drop the result

function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

async function api(path, { method = "GET", query = {}, body } = {}) {
  const url = new URL(path, API);
  for (const [name, value] of Object.entries(query)) {
    for (const item of [].concat(value)) {
      if (item !== undefined && item !== null && item !== "") url.searchParams.append(name, String(item));
    }
  }
  const headers = { Accept: "application/json, application/problem+json" };
  const key = storedKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    throw new ApiError(0, { title: "Network error", detail: `the server did not answer (${error.message})` });
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!response.ok) {
    const problem = parsed && typeof parsed === "object" ? parsed : { title: response.statusText, detail: text.slice(0, 300) };
    throw new ApiError(response.status, problem);
  }
  return parsed;
}

// -- banner, key form, errors --------------------------------------------------------------------------------

function clearBanner() {
  banner.hidden = true;
  banner.replaceChildren();
}

function showBanner(tone, title, detail, extra = []) {
  banner.className = `banner ${tone}`;
  banner.replaceChildren(
    el("div", { class: "banner-body" }, el("strong", {}, title), detail ? el("span", { class: "detail" }, detail) : null, extra),
    el("button", { class: "quiet close", type: "button", "aria-label": "Dismiss", onclick: clearBanner }, "×"),
  );
  banner.hidden = false;
}

function showProblem(error) {
  if (!(error instanceof ApiError)) {
    showBanner("error", "Something went wrong", String(error && error.message ? error.message : error));
    return;
  }
  const problem = error.problem || {};
  const fields = Array.isArray(problem.errors) ? problem.errors : [];
  const list = fields.length ? el("ul", { class: "field-errors" }, fields.map((f) => el("li", {}, code(f.field), " ", f.detail))) : null;
  const title = `${problem.title || "Error"}${error.status ? ` (${error.status})` : ""}`;
  showBanner("error", title, problem.detail || "", list);
}

function handleError(error) {
  if (error instanceof Stale) return;
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
    sessionStorage.removeItem(KEY_STORAGE);
    showKeyForm(error.problem);
    return;
  }
  showProblem(error);
}

function signedIn(on) {
  nav.hidden = !on;
  forgetButton.hidden = !on;
}

function showKeyForm(problem) {
  navigation += 1; // whatever was loading is stale now
  clearBanner();
  signedIn(false);
  document.title = "Sign in · eventbus";
  const input = el("input", {
    id: "api-key", name: "api-key", type: "password", autocomplete: "off", spellcheck: "false",
    placeholder: "ebk_…", "aria-label": "API key",
  });
  const error = problem ? el("p", { class: "form-error", role: "alert" }, problem.detail || problem.title || "The key was refused") : null;
  const form = el(
    "form",
    { id: "key-form", class: "key-form panel", onsubmit: (event) => signIn(event, input) },
    el("h1", {}, "Sign in"),
    el("p", {}, "Enter an API key with the ", code("admin"), " scope. It stays in this browser tab only (sessionStorage) and is sent to the API as ", code("Authorization: Bearer"), ". On a server that runs without keys, leave it empty."),
    error,
    el("label", { for: "api-key" }, "API key"),
    input,
    el("button", { type: "submit", class: "primary" }, "Open dashboard"),
  );
  main.replaceChildren(form);
  input.focus();
}

async function signIn(event, input) {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, input.value.trim());
  try {
    await api("subscriptions", { query: { page_size: 1 } }); // the dashboard needs admin: check it once, now
  } catch (error) {
    handleError(error);
    return;
  }
  signedIn(true);
  if (!location.hash || location.hash === "#" || location.hash === "#/") location.hash = "#/subscriptions";
  else route();
}

forgetButton.addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORAGE);
  showKeyForm(null);
});

// -- routing --------------------------------------------------------------------------------------------------

let navigation = 0;

function parseHash() {
  const raw = location.hash.replace(/^#/, "");
  const cut = raw.indexOf("?");
  const path = cut < 0 ? raw : raw.slice(0, cut);
  const params = new URLSearchParams(cut < 0 ? "" : raw.slice(cut + 1));
  const parts = path.split("/").filter(Boolean).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  });
  return { parts, params };
}

const PAGES = {
  subscriptions: (parts, params) => (parts[1] ? subscriptionPage(parts[1]) : subscriptionsPage(params)),
  events: (parts, params) => (parts[1] ? eventPage(parts[1]) : eventsPage(params)),
  deliveries: (parts, params, current) => deliveryPage(parts[1], current),
  types: (parts, params) => typesPage(params),
};

async function route() {
  if (storedKey() === null) {
    showKeyForm(null);
    return;
  }
  const current = ++navigation;
  const { parts, params } = parseHash();
  const page = PAGES[parts[0]];
  if (!page || (parts[0] === "deliveries" && !parts[1])) {
    location.replace("#/subscriptions");
    return;
  }
  signedIn(true);
  clearBanner();
  for (const item of nav.querySelectorAll("a")) item.classList.toggle("active", item.dataset.section === (parts[0] === "deliveries" ? "subscriptions" : parts[0]));
  main.setAttribute("aria-busy", "true");
  try {
    const content = await page(parts, params, current);
    if (current !== navigation) return;
    main.replaceChildren(content);
  } catch (error) {
    if (current !== navigation) return;
    main.replaceChildren(el("div", { class: "page" }, empty("This page could not be loaded.")));
    handleError(error);
  } finally {
    if (current === navigation) main.removeAttribute("aria-busy");
  }
}

function pageHeader(crumbs, title, badges = [], actions = []) {
  document.title = `${title} · eventbus`;
  const isId = /^[a-z]{3}_[0-9A-Za-z]+$/.test(title);
  return el(
    "div",
    { class: "page-header" },
    crumbs.length ? el("div", { class: "crumbs" }, crumbs.map(([hash, text]) => [link(hash, text), " / "])) : null,
    el("div", { class: "title-row" }, el("h1", { class: isId ? "mono" : null }, title), el("div", { class: "badges" }, badges), el("div", { class: "actions" }, actions)),
  );
}

function pager(base, params, nextToken) {
  const here = params.get("page_token");
  if (!here && !nextToken) return null;
  const withToken = (token) => {
    const next = new URLSearchParams(params);
    if (token) next.set("page_token", token);
    else next.delete("page_token");
    const text = next.toString();
    return text ? `${base}?${text}` : base;
  };
  return el(
    "div",
    { class: "pager" },
    here ? link(withToken(""), "« First page") : null,
    nextToken ? link(withToken(nextToken), "Next page »", { class: "next" }) : el("span", { class: "muted" }, "Last page"),
  );
}

// Run an action from a button or form; problems go to the banner (401/403 to the key form).
async function act(button, work) {
  button.disabled = true;
  try {
    await work();
  } catch (error) {
    handleError(error);
  } finally {
    button.disabled = false;
  }
}

// -- subscriptions --------------------------------------------------------------------------------------------

function target(sub) {
  const url = sub.options && typeof sub.options.url === "string" ? sub.options.url : null;
  return url ? el("span", { class: "url" }, url) : el("span", { class: "muted" }, sub.kind);
}

function patterns(sub) {
  return sub.patterns.length ? sub.patterns.map((p) => code(p)) : el("span", { class: "muted" }, "every type");
}

async function subscriptionsPage(params) {
  const page = await api("subscriptions", { query: { page_size: PAGE_SIZE, page_token: params.get("page_token") } });
  const rows = page.items.map((sub) => {
    const rate = successRate(sub.stats);
    return el(
      "tr",
      {},
      el("td", {}, link(`#/subscriptions/${enc(sub.id)}`, sub.id, { class: "mono" }), el("div", { class: "sub-target" }, target(sub))),
      el("td", {}, sub.kind),
      el("td", { class: "patterns" }, patterns(sub)),
      el("td", {}, stateBadge(sub.state)),
      el("td", {}, stateBadge(sub.health.circuit)),
      el("td", { class: "num" }, badge(rate.text, rate.tone)),
      el("td", { class: "num" }, sub.stats.pending + sub.stats.leased),
      el("td", { class: "num" }, sub.health.consecutive_failures),
    );
  });
  return el(
    "div",
    { class: "page" },
    pageHeader([], "Subscriptions"),
    rows.length
      ? table(["Subscription", "Kind", "Patterns", "State", "Circuit", ["Success", "num"], ["Pending", "num"], ["Failures in a row", "num"]], rows, { class: "subscriptions" })
      : empty("No subscriptions yet: add one with `eventbus endpoints add URL` or POST /v1/endpoints."),
    pager("#/subscriptions", params, page.next_page_token),
  );
}

function stat(label, value, tone = "") {
  return el("div", { class: `stat ${tone}` }, el("div", { class: "stat-value" }, value), el("div", { class: "stat-label" }, label));
}

function deliveryRows(deliveries, { showEvent = true, showSubscription = false } = {}) {
  return deliveries.map((d) =>
    el(
      "tr",
      {},
      el("td", {}, link(`#/deliveries/${enc(d.id)}`, d.id, { class: "mono" })),
      showSubscription ? el("td", {}, link(`#/subscriptions/${enc(d.subscription_id)}`, d.subscription_id, { class: "mono" })) : null,
      showEvent ? el("td", {}, link(`#/events/${enc(d.event_id)}`, d.event_id, { class: "mono" })) : null,
      el("td", {}, stateBadge(d.state)),
      el("td", { class: "num" }, d.attempts),
      el("td", { class: "error-text" }, d.last_error || d.dead_reason || el("span", { class: "muted" }, "—")),
      showEvent ? el("td", {}, when(d.last_attempt_at)) : null,
      el("td", {}, d.state === "succeeded" || d.state === "dead" ? when(d.finished_at) : when(d.next_attempt_at)),
    ),
  );
}

async function subscriptionPage(id) {
  const [sub, dead, pending] = await Promise.all([
    api(`subscriptions/${enc(id)}`),
    api("deliveries", { query: { subscription_id: id, state: "dead", order: "newest", page_size: 50 } }),
    api("deliveries", { query: { subscription_id: id, state: "pending", order: "newest", page_size: 50 } }),
  ]);
  const failures = [...dead.items, ...pending.items.filter((d) => d.attempts > 0)]
    .sort((a, b) => String(b.last_attempt_at || "").localeCompare(String(a.last_attempt_at || "")))
    .slice(0, 25);
  const rate = successRate(sub.stats);
  const health = sub.health;
  const toggle =
    sub.state === "active"
      ? el("button", { type: "button", id: "pause", onclick: (e) => act(e.target, () => changeState(sub.id, "pause")) }, "Pause")
      : sub.state === "deleted"
        ? null
        : el("button", { type: "button", id: "resume", class: "primary", onclick: (e) => act(e.target, () => changeState(sub.id, "resume")) }, "Resume");
  const test = el("button", { type: "button", id: "send-test", onclick: (e) => act(e.target, () => sendTest(sub.id)) }, "Send test event");

  return el(
    "div",
    { class: "page" },
    pageHeader([["#/subscriptions", "Subscriptions"]], sub.id, [badge(sub.kind, "kind"), stateBadge(sub.state), badge(`circuit ${health.circuit}`, TONES[health.circuit])], [toggle, test]),
    sub.state_reason ? el("p", { class: "notice warn" }, `${sub.state}: ${sub.state_reason}`) : null,
    el(
      "div",
      { class: "stats" },
      stat("success rate", rate.text, rate.tone),
      stat("succeeded", sub.stats.succeeded),
      stat("dead", sub.stats.dead, sub.stats.dead ? "bad" : ""),
      stat("pending", sub.stats.pending + sub.stats.leased, sub.stats.pending ? "warn" : ""),
      stat("failures in a row", health.consecutive_failures, health.consecutive_failures ? "bad" : ""),
    ),
    el(
      "div",
      { class: "columns" },
      section(
        "Health and circuit",
        definitions([
          ["Circuit", stateBadge(health.circuit)],
          ["Failures in a row", String(health.consecutive_failures)],
          ["Failing since", when(health.failing_since)],
          ["Circuit opened", when(health.circuit_opened_at)],
          ["Next probe", when(health.next_probe_at)],
          ["Oldest pending", when(sub.stats.oldest_pending_at)],
        ]),
      ),
      section(
        "Settings",
        definitions([
          ["Target", target(sub)],
          ["Patterns", patterns(sub)],
          sub.filter ? ["Filter", code(sub.filter)] : null,
          ["Retry schedule", sub.retry_schedule.length ? sub.retry_schedule.map(duration).join(", ") : "no retries"],
          ["Rate limit", sub.rate_limit ? `${sub.rate_limit}/s` : "none"],
          ["Ordering", sub.ordering],
          ["Created", when(sub.created_at)],
        ]),
      ),
    ),
    section(
      "Recent failures",
      failures.length
        ? table(["Delivery", "Event", "State", ["Attempts", "num"], "Last error", "Last attempt", "Next / finished"], deliveryRows(failures), { class: "deliveries failures" })
        : empty("No dead or retrying deliveries."),
    ),
    el("div", { class: "columns" }, recoverForm(sub.id), whyForm(sub.id)),
  );
}

async function changeState(id, action) {
  await api(`subscriptions/${enc(id)}/${action}`, { method: "POST", body: {} });
  await route();
  showBanner("info", action === "pause" ? "Paused" : "Resumed", action === "pause" ? "Deliveries are held until you resume." : "Held deliveries go out now.");
}

async function sendTest(id) {
  const delivery = await api(`subscriptions/${enc(id)}/test`, { method: "POST", body: {} });
  showBanner("info", "Test event sent", "", [" Follow its delivery: ", link(`#/deliveries/${enc(delivery.id)}`, delivery.id, { class: "mono" })]);
}

function recoverForm(id) {
  const since = el("input", { type: "datetime-local", id: "recover-since", required: true, value: localInput(new Date(Date.now() - 86400000).toISOString()) });
  const pendingToo = el("input", { type: "checkbox", id: "recover-pending" });
  const output = el("div", { class: "output", "aria-live": "polite" });
  const submit = el("button", { type: "submit" }, "Recover");
  const form = el(
    "form",
    {
      id: "recover-form",
      onsubmit: (event) => {
        event.preventDefault();
        act(submit, async () => {
          const answer = await api(`subscriptions/${enc(id)}/recover`, {
            method: "POST",
            body: { since: isoFromLocal(since.value), include_pending: pendingToo.checked },
          });
          output.replaceChildren(el("p", { class: "result" }, `Re-queued ${answer.recovered} deliver${answer.recovered === 1 ? "y" : "ies"}.`));
        });
      },
    },
    el("p", { class: "hint" }, "Re-queue the dead deliveries created since a moment (your local time)."),
    el("div", { class: "inline" }, el("label", { for: "recover-since" }, "Since"), since),
    el("label", { class: "check" }, pendingToo, "pending ones too (attempt now)"),
    submit,
    output,
  );
  return section("Recover since", form);
}

function whyForm(id) {
  const eventId = el("input", { type: "text", id: "why-event", placeholder: "evt_…", required: true, spellcheck: "false" });
  const output = el("div", { class: "output", id: "why-result", "aria-live": "polite" });
  const submit = el("button", { type: "submit" }, "Explain");
  const form = el(
    "form",
    {
      id: "why-form",
      onsubmit: (event) => {
        event.preventDefault();
        act(submit, async () => {
          const why = await api(`subscriptions/${enc(id)}/why`, { query: { event_id: eventId.value.trim() } });
          output.replaceChildren(
            el("p", {}, "Verdict: ", stateBadge(why.verdict)),
            why.reasons.length ? el("ul", { class: "reasons" }, why.reasons.map((r) => el("li", {}, r))) : null,
            why.delivery ? el("p", {}, "Delivery: ", link(`#/deliveries/${enc(why.delivery.id)}`, why.delivery.id, { class: "mono" }), ` (${why.attempt_log.length} attempts)`) : null,
          );
        });
      },
    },
    el("p", { class: "hint" }, "Why an event was, or was not (yet), delivered here."),
    el("div", { class: "inline" }, el("label", { for: "why-event" }, "Event"), eventId),
    submit,
    output,
  );
  return section("Why (not) delivered?", form);
}

// -- events ---------------------------------------------------------------------------------------------------

const SEARCH_FIELDS = [
  ["pattern", "Type pattern", "order.* or **"],
  ["source", "Source", "/shop"],
  ["subject", "Subject", ""],
];

async function eventsPage(params) {
  const inputs = {};
  for (const [name, , placeholder] of SEARCH_FIELDS) {
    inputs[name] = el("input", { type: "text", id: `search-${name}`, name, value: params.get(name) || "", placeholder, spellcheck: "false" });
  }
  for (const name of ["received_after", "received_before"]) {
    inputs[name] = el("input", { type: "datetime-local", id: `search-${name}`, name, value: localInput(params.get(name)) });
  }
  const form = el(
    "form",
    {
      id: "event-search",
      class: "search",
      onsubmit: (event) => {
        event.preventDefault();
        const next = new URLSearchParams();
        for (const [name, input] of Object.entries(inputs)) {
          const value = input.type === "datetime-local" ? isoFromLocal(input.value) : input.value.trim();
          if (value) next.set(name, value);
        }
        const text = next.toString();
        location.hash = text ? `#/events?${text}` : "#/events";
      },
    },
    SEARCH_FIELDS.map(([name, label]) => el("label", {}, el("span", {}, label), inputs[name])),
    el("label", {}, el("span", {}, "Received after"), inputs.received_after),
    el("label", {}, el("span", {}, "Received before"), inputs.received_before),
    el("div", { class: "search-actions" }, el("button", { type: "submit", class: "primary" }, "Search"), link("#/events", "Clear")),
  );
  const page = await api("events", {
    query: {
      pattern: params.get("pattern"),
      source: params.get("source"),
      subject: params.get("subject"),
      received_after: params.get("received_after"),
      received_before: params.get("received_before"),
      page_size: PAGE_SIZE,
      page_token: params.get("page_token"),
    },
  });
  const rows = page.items.map((e) =>
    el(
      "tr",
      {},
      el("td", {}, when(e.received_at)),
      el("td", {}, code(e.type)),
      el("td", {}, e.source),
      el("td", {}, e.subject ?? el("span", { class: "muted" }, "—")),
      el("td", {}, link(`#/events/${enc(e.event_id)}`, e.event_id, { class: "mono" })),
      el("td", { class: "num" }, e.seq),
    ),
  );
  return el(
    "div",
    { class: "page" },
    pageHeader([], "Events"),
    section("Search", form),
    rows.length
      ? table(["Received", "Type", "Source", "Subject", "Event", ["Seq", "num"]], rows, { class: "events" })
      : empty(page.next_page_token ? "No match on this page; there may be more further on." : "No events match."),
    pager("#/events", params, page.next_page_token),
  );
}

const SHOWN_APART = new Set(["data", "data_base64", "event_id", "seq", "received_at"]);

function payload(event) {
  if ("data" in event) return pre(pretty(event.data), { id: "payload", class: "json" });
  if ("data_base64" in event) return [el("p", { class: "hint" }, "Binary data, base64:"), pre(event.data_base64, { id: "payload" })];
  return empty("This event carries no data.");
}

function rawRequest(raw) {
  const query = raw.query.length ? `?${raw.query.map(([k, v]) => `${k}=${v}`).join("&")}` : "";
  return section(
    "Raw inbound request",
    definitions([
      ["Request", code(`${raw.method} ${raw.path}${query}`)],
      ["Received", when(raw.received_at)],
      ["From", raw.remote || "—"],
    ]),
    table(["Header", "Value"], raw.headers.map(([name, value]) => el("tr", {}, el("td", {}, code(name)), el("td", { class: "wrap" }, value))), { class: "headers" }),
    raw.body_base64 ? [el("p", { class: "hint" }, "Binary body, base64:"), pre(raw.body_base64)] : pre(pretty(raw.body), { id: "raw-body", class: "json" }),
  );
}

async function eventPage(id) {
  const [detail, deliveries] = await Promise.all([
    api(`events/${enc(id)}`),
    api("deliveries", { query: { event_id: id, page_size: 200 } }),
  ]);
  const event = detail.event;
  const attributes = Object.entries(event)
    .filter(([name]) => !SHOWN_APART.has(name))
    .map(([name, value]) => [name, typeof value === "string" ? value : JSON.stringify(value)]);
  return el(
    "div",
    { class: "page" },
    pageHeader([["#/events", "Events"]], event.event_id, [badge(event.type, "kind"), badge(`seq ${event.seq}`)]),
    el(
      "div",
      { class: "columns wide-right" },
      section("Attributes", definitions([["Received", when(event.received_at)], ...attributes])),
      section("Payload", payload(event)),
    ),
    detail.raw_request ? rawRequest(detail.raw_request) : null,
    section(
      "Deliveries",
      deliveries.items.length
        ? table(["Delivery", "Subscription", "State", ["Attempts", "num"], "Last error", "Next / finished"], deliveryRows(deliveries.items, { showEvent: false, showSubscription: true }), { class: "deliveries" })
        : empty("No subscription matched this event (or none existed when it arrived)."),
    ),
  );
}

// -- deliveries -----------------------------------------------------------------------------------------------

function attemptRows(attempts) {
  return attempts.map((a) =>
    el(
      "tr",
      { class: `attempt outcome-${a.outcome}` },
      el("td", { class: "num" }, a.number, a.manual ? badge("manual", "kind") : null, a.probe ? badge("probe", "kind") : null),
      el("td", {}, when(a.started_at)),
      el("td", { class: "status" }, attemptResult(a)),
      el("td", { class: "num" }, `${Number(a.duration_ms).toFixed(1)} ms`),
      el("td", {}, stateBadge(a.outcome)),
      el("td", { class: "response" }, excerpt(a)),
    ),
  );
}

async function deliveryPage(id, current) {
  const delivery = await api(`deliveries/${enc(id)}`);
  const resend = el("button", { type: "button", id: "resend", class: "primary", onclick: (e) => act(e.target, () => resendDelivery(delivery, current)) }, "Resend");
  const attempts = delivery.attempt_log;
  return el(
    "div",
    { class: "page" },
    pageHeader(
      [["#/subscriptions", "Subscriptions"], [`#/subscriptions/${enc(delivery.subscription_id)}`, delivery.subscription_id]],
      delivery.id,
      [el("span", { id: "delivery-state" }, stateBadge(delivery.state))],
      [resend],
    ),
    el(
      "div",
      { class: "columns" },
      section(
        "Delivery",
        definitions([
          ["Subscription", link(`#/subscriptions/${enc(delivery.subscription_id)}`, delivery.subscription_id, { class: "mono" })],
          ["Event", link(`#/events/${enc(delivery.event_id)}`, delivery.event_id, { class: "mono" })],
          ["State", stateBadge(delivery.state)],
          ["Attempts", String(delivery.attempts)],
          delivery.dead_reason ? ["Dead because", delivery.dead_reason] : null,
          delivery.last_error ? ["Last error", el("span", { class: "error-text" }, delivery.last_error)] : null,
        ]),
      ),
      section(
        "Timeline",
        definitions([
          ["Created", when(delivery.created_at)],
          ["First attempt", when(delivery.first_attempt_at)],
          ["Last attempt", when(delivery.last_attempt_at)],
          ["Next attempt", when(delivery.next_attempt_at)],
          ["Finished", when(delivery.finished_at)],
          delivery.ordering_key ? ["Ordering key", code(delivery.ordering_key)] : null,
        ]),
      ),
    ),
    section(
      "Attempts",
      attempts.length
        ? table([["#", "num"], "Started", "Result", ["Latency", "num"], "Outcome", "Response"], attemptRows(attempts), { id: "attempts", class: "attempts" })
        : empty("No attempt yet."),
    ),
  );
}

async function resendDelivery(delivery, current) {
  const before = delivery.attempt_log.length;
  await api(`deliveries/${enc(delivery.id)}/resend`, { method: "POST", body: {} });
  showBanner("info", "Resend queued", "waiting for the new attempt…");
  for (let poll = 0; poll < RESEND_POLL_LIMIT; poll += 1) {
    await new Promise((resolve) => setTimeout(resolve, RESEND_POLL_MS));
    if (current !== navigation) return;
    const now = await api(`deliveries/${enc(delivery.id)}`);
    if (now.attempt_log.length > before && now.state !== "leased") break;
  }
  if (current !== navigation) return;
  await route();
}

// -- event types ----------------------------------------------------------------------------------------------

function folded(summary, text, attrs = {}) {
  return el("details", attrs, el("summary", {}, summary), pre(text, { class: "json" }));
}

async function typesPage(params) {
  const page = await api("event-types", { query: { page_size: 100, page_token: params.get("page_token") } });
  const items = page.items || [];
  const rows = items.map((t) =>
    el(
      "tr",
      {},
      el("td", {}, link(`#/events?pattern=${enc(t.type)}`, t.type, { class: "mono" })),
      el("td", { class: "num" }, t.count ?? "—"),
      el("td", {}, when(t.first_seen ?? t.first_seen_at)),
      el("td", {}, when(t.last_seen ?? t.last_seen_at)),
      el(
        "td",
        {},
        t.sample !== null && t.sample !== undefined
          ? folded("sample", pretty(t.sample))
          : el("span", { class: "muted" }, t.sample_omitted ? `no sample (${t.sample_omitted})` : "—"),
      ),
      el("td", {}, t.schema ? folded("registered schema", pretty(t.schema)) : el("span", { class: "muted" }, "none registered")),
    ),
  );
  return el(
    "div",
    { class: "page" },
    pageHeader([], "Event types"),
    rows.length ? table(["Type", ["Events", "num"], "First seen", "Last seen", "Sample payload", "Schema"], rows, { class: "types" }) : empty("No event type seen yet."),
    pager("#/types", params, page.next_page_token),
  );
}

// -- start ----------------------------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
route();
