// The logclass console: classify pasted lines or a CSV, show the report's charts, watch the
// running sidecar. No framework and no inline script (the page's CSP forbids both); every value
// from the server or a log line is put into the page as text (textContent, attributes), never as
// markup, because log lines are attacker-controlled input. URLs are relative to the page, so
// the console also works behind a proxy that serves the sidecar under a path prefix.

const TOKEN_KEY = "logclass.console.token";
const SHOWN_ROWS = 1000;
const POLL_MS = 2000;
const SPARK_POINTS = 30; // one minute of samples at POLL_MS
const DEFAULT_MAX_RECORDS = 1000;
// The columns the result table shows, in order: header text and the CSV column it reads.
const RESULT_COLUMNS = [
  ["source", "source"],
  ["message", "log_message"],
  ["label", "target_label"],
  ["tier", "tier"],
  ["confidence", "confidence"],
  ["template id", "template_id"],
  ["error", "error"],
];
const CSV_OUT = ["source", "log_message", "target_label", "tier", "confidence", "error", "template_id"];

const $ = (id) => document.getElementById(id);

// ---- API calls -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorOf(response) {
  // Every error of the API is google.rpc.Status JSON; anything else (a proxy's page) is summarised.
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (body && typeof body.message === "string") {
    return new ApiError(response.status, body.code, body.message);
  }
  return new ApiError(response.status, 2, `HTTP ${response.status} ${response.statusText}`.trim());
}

async function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.set("Authorization", `Bearer ${token}`);
  let response;
  try {
    response = await fetch(path, { ...init, headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, 14, `cannot reach the sidecar (${err.message}); is it still running?`);
  }
  if (response.ok) return response;
  const error = await errorOf(response);
  if (response.status === 401) askForToken(token ? "The token was refused; enter the current one." : null);
  throw error;
}

async function apiJson(path, init = {}) {
  return (await api(path, init)).json();
}

// ---- Auth --------------------------------------------------------------------------------------

function askForToken(message) {
  const form = $("auth-form");
  if (message) $("auth-message").textContent = message;
  if (form.hidden) {
    form.hidden = false;
    $("token").focus();
  }
}

function tokenChanged() {
  $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
  clearError();
  loadModel();
  live.resume();
}

$("auth-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  $("auth-form").hidden = true;
  tokenChanged();
});

$("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  tokenChanged();
});

// ---- Messages ----------------------------------------------------------------------------------

function showError(what, err) {
  const box = $("error");
  const code = err instanceof ApiError && err.code !== undefined ? ` (code ${err.code})` : "";
  box.textContent = `${what}: ${err.message}${code}`;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const [text, className] of cells) tr.append(el("td", text, className));
  return tr;
}

// ---- CSV (RFC 4180) ----------------------------------------------------------------------------

// Fields separated by commas, records by CRLF or LF; a field in double quotes may hold commas,
// line breaks and doubled quotes. Blank lines are skipped, as Python's csv module does.
export function parseCsv(text) {
  const rows = [];
  const n = text.length;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  let record = [];
  const endOfField = (from) => {
    let j = from;
    while (j < n) {
      const c = text.charCodeAt(j);
      if (c === 44 || c === 10 || c === 13) break; // , \n \r
      j += 1;
    }
    return j;
  };
  while (i < n) {
    let value = "";
    if (text.charCodeAt(i) === 34) {
      let start = i + 1;
      for (;;) {
        const quote = text.indexOf('"', start);
        if (quote < 0) throw new Error(`unterminated quoted field starting at character ${i}`);
        value += text.slice(start, quote);
        if (text.charCodeAt(quote + 1) === 34) {
          value += '"';
          start = quote + 2;
          continue;
        }
        i = quote + 1;
        break;
      }
      // Anything between the closing quote and the delimiter is kept, as Python's reader does.
      const end = endOfField(i);
      value += text.slice(i, end);
      i = end;
    } else {
      const end = endOfField(i);
      value = text.slice(i, end);
      i = end;
    }
    record.push(value);
    if (i >= n) break;
    const c = text.charCodeAt(i);
    if (c === 44) {
      i += 1;
      if (i >= n) record.push("");
      continue;
    }
    i += c === 13 && text.charCodeAt(i + 1) === 10 ? 2 : 1;
    if (!(record.length === 1 && record[0] === "")) rows.push(record);
    record = [];
  }
  if (record.length && !(record.length === 1 && record[0] === "")) rows.push(record);
  return rows;
}

function csvField(value) {
  const text = String(value ?? "");
  return /[",\r\n]/.test(text) || text !== text.trim() ? `"${text.replaceAll('"', '""')}"` : text;
}

export function toCsv(header, rows) {
  return [header, ...rows].map((r) => r.map(csvField).join(",")).join("\r\n") + "\r\n";
}

// ---- Results -----------------------------------------------------------------------------------

const result = { header: [], rows: [], csv: "", filename: "", order: [], sortBy: -1, ascending: true };

function showResult(header, rows, csv, filename) {
  Object.assign(result, { header, rows, csv, filename, sortBy: -1, ascending: true });
  result.order = rows.map((_, i) => i);
  $("results-panel").hidden = false;
  const flagged = rows.filter((r) => r[header.indexOf("error")]).length;
  $("result-summary").textContent =
    `${rows.length.toLocaleString()} records` + (flagged ? `, ${flagged.toLocaleString()} flagged` : "");
  $("result-note").textContent =
    rows.length > SHOWN_ROWS
      ? `Showing the first ${SHOWN_ROWS.toLocaleString()} of ${rows.length.toLocaleString()} rows; Download CSV has them all.`
      : "";
  renderHead();
  renderBody();
}

function renderHead() {
  const tr = $("results").tHead.rows[0];
  tr.replaceChildren(
    ...RESULT_COLUMNS.map(([title], c) => {
      const th = el("th");
      th.scope = "col";
      if (c === result.sortBy) th.setAttribute("aria-sort", result.ascending ? "ascending" : "descending");
      const button = el("button", title);
      button.type = "button";
      button.addEventListener("click", () => sortResults(c));
      th.append(button);
      return th;
    }),
  );
}

function renderBody() {
  const index = RESULT_COLUMNS.map(([, column]) => result.header.indexOf(column));
  const rows = result.order.slice(0, SHOWN_ROWS).map((r) => {
    const values = result.rows[r];
    return row(
      index.map((i, c) => {
        const value = i >= 0 ? (values[i] ?? "") : "";
        const kind = c === 1 ? "msg" : c === 4 ? "n" : c === 6 && value ? "err" : undefined;
        return [value, kind];
      }),
    );
  });
  replaceRows($("results").tBodies[0], rows);
}

function sortResults(c) {
  result.ascending = result.sortBy === c ? !result.ascending : true;
  result.sortBy = c;
  const i = result.header.indexOf(RESULT_COLUMNS[c][1]);
  const numeric = RESULT_COLUMNS[c][1] === "confidence";
  const key = (r) => (i >= 0 ? (result.rows[r][i] ?? "") : "");
  const compare = numeric
    ? (a, b) => (Number(key(a)) || 0) - (Number(key(b)) || 0)
    : (a, b) => key(a).localeCompare(key(b));
  const sign = result.ascending ? 1 : -1;
  result.order.sort((a, b) => sign * compare(a, b) || a - b);
  renderHead();
  renderBody();
}

$("download").addEventListener("click", () => {
  const url = URL.createObjectURL(new Blob([result.csv], { type: "text/csv;charset=utf-8" }));
  const link = el("a");
  link.href = url;
  link.download = result.filename;
  document.body.append(link);
  link.click();
  link.remove();
  // The download has taken its copy once the click is handled.
  setTimeout(() => URL.revokeObjectURL(url), 0);
});

// ---- Classify ----------------------------------------------------------------------------------

let busy = false;

async function whileBusy(what, work) {
  if (busy) return;
  busy = true;
  for (const button of document.querySelectorAll("#lines-form button, #csv-form button")) button.disabled = true;
  $("busy").textContent = `${what}…`;
  clearError();
  try {
    await work();
    $("busy").textContent = "";
  } catch (err) {
    $("busy").textContent = "";
    showError(what, err);
  } finally {
    busy = false;
    for (const button of document.querySelectorAll("#lines-form button, #csv-form button")) button.disabled = false;
  }
}

function errorName(code) {
  // proto3 JSON leaves out the default (no error); the CSV writes error codes in lower case.
  return !code || code === "ERROR_CODE_UNSPECIFIED" ? "" : String(code).toLowerCase();
}

// The answer streams as rows are decided; X-Logclass-Rows says how many are coming. Lines are
// counted as they arrive (a quoted multi-line field counts more than once, hence the cap).
async function streamedText(response, onProgress) {
  const total = Number(response.headers.get("X-Logclass-Rows")) || 0;
  if (!response.body || !total) return response.text();
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const parts = [];
  let lines = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const text = decoder.decode(value, { stream: true });
    parts.push(text);
    for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) lines += 1;
    onProgress(Math.min(Math.max(lines - 1, 0), total), total);
  }
  parts.push(decoder.decode());
  return parts.join("");
}

async function classifyLines(lines, source) {
  const limit = model.info?.maxRecordsPerRequest || DEFAULT_MAX_RECORDS;
  const rows = [];
  for (let start = 0; start < lines.length; start += limit) {
    const chunk = lines.slice(start, start + limit);
    const body = {
      records: chunk.map((message, i) => ({ id: String(start + i + 1), source, message })),
      requestId: `console-${Date.now()}-${start}`,
      waitForAll: true,
    };
    const answer = await apiJson("v1/classify", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const results = answer.results || [];
    if (results.length !== chunk.length) {
      throw new Error(`the server answered ${results.length} results for ${chunk.length} records`);
    }
    results.forEach((r, i) =>
      rows.push([
        source,
        chunk[i],
        r.label ?? "",
        r.tier ?? "",
        Number(r.confidence ?? 0).toFixed(4),
        errorName(r.error),
        r.templateId ?? "",
      ]),
    );
  }
  return rows;
}

$("lines-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const lines = $("lines").value.split(/\r?\n/).filter((line) => line.trim());
  const source = $("source").value.trim() || "console";
  if (!lines.length) {
    showError("classify", new Error("paste at least one log line, one per line"));
    return;
  }
  whileBusy(`classifying ${lines.length} line${lines.length === 1 ? "" : "s"}`, async () => {
    const rows = await classifyLines(lines, source);
    showResult(CSV_OUT, rows, toCsv(CSV_OUT, rows), "console.classified.csv");
    $("report-panel").hidden = true;
  });
});

$("csv-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("csv-file").files[0];
  if (!file) {
    showError("classify", new Error("choose a CSV file first"));
    return;
  }
  whileBusy(`classifying ${file.name}`, async () => {
    const form = new FormData();
    form.append("file", file, file.name);
    const response = await api("classify?template_id=true", { method: "POST", body: form });
    const csv = await streamedText(response, (done, total) => {
      $("busy").textContent = `classifying ${file.name}: ${done.toLocaleString()} of ${total.toLocaleString()} rows`;
    });
    const rows = parseCsv(csv);
    if (!rows.length) throw new Error("the server returned an empty CSV");
    const stem = file.name.replace(/\.csv$/i, "") || "input";
    showResult(rows[0], rows.slice(1), csv, `${stem}.classified.csv`);
    await showReport(csv);
  });
});

// ---- Report ------------------------------------------------------------------------------------

async function showReport(csv) {
  $("report-panel").hidden = false;
  $("cards").replaceChildren();
  $("charts").replaceChildren();
  $("report-status").textContent = "drawing the charts…";
  const form = new FormData();
  form.append("file", new Blob([csv], { type: "text/csv" }), "classified.csv");
  let report;
  try {
    report = await apiJson("v1/report", { method: "POST", body: form });
  } catch (err) {
    // The classification stands; the charts are extra (501 when the server has no matplotlib).
    $("report-status").textContent = `No charts: ${err.message}`;
    return;
  }
  $("report-status").textContent = `${report.rows.toLocaleString()} records, ${report.charts.length} charts`;
  $("cards").replaceChildren(
    ...report.cards.map((card) => {
      const box = el("div", null, "card");
      box.append(el("b", card.value), el("span", card.label));
      return box;
    }),
  );
  $("charts").replaceChildren(
    ...report.charts.map((chart) => {
      const figure = el("figure");
      figure.id = `chart-${chart.name}`;
      const img = el("img");
      img.alt = chart.alt;
      img.title = chart.title;
      img.src = `data:image/png;base64,${chart.png}`;
      figure.append(img, el("figcaption", chart.title));
      return figure;
    }),
  );
}

// ---- Model -------------------------------------------------------------------------------------

const model = { info: null };

async function loadModel() {
  let info;
  try {
    info = await apiJson("v1/model");
  } catch (err) {
    if (err.status !== 401) showError("model info", err);
    return;
  }
  model.info = info;
  $("model-version").textContent = info.modelVersion || "–";
  $("model-tiers").textContent = (info.tiers || []).join(" → ") || "–";
  $("model-embedding").textContent = [info.embeddingModel, info.embeddingDevice].filter(Boolean).join(" on ") || "–";
  $("model-llm").textContent = [info.llmBackend, info.llmModel].filter(Boolean).join(": ") || "none";
  $("model-server").textContent = info.serverVersion ? `logclass ${info.serverVersion}` : "–";
  $("model-labels").replaceChildren(
    ...(info.labels || []).map((label) => {
      const chip = el("span", label, "chip");
      if (label === info.fallbackLabel) chip.title = "fallback label";
      return chip;
    }),
  );
}

// ---- Live view ---------------------------------------------------------------------------------

function sum(items, key) {
  const out = new Map();
  for (const item of items || []) out.set(item[key], (out.get(item[key]) || 0) + Number(item.count || 0));
  return out;
}

function rate(value) {
  return value >= 100 ? value.toFixed(0) : value >= 1 ? value.toFixed(1) : value.toFixed(2);
}

function ratio(hits, total) {
  return total > 0 ? `${((100 * hits) / total).toFixed(1)}%` : "–";
}

// One /v1/stats answer as totals: records by tier and by label, cache hits and misses.
export function sample(stats) {
  const cache = stats.cache || {};
  return {
    uptime: Number(stats.uptimeSeconds || 0),
    tiers: sum(stats.records, "tier"),
    labels: sum(stats.records, "label"),
    hits: Number(cache.exact || 0) + Number(cache.template || 0),
    misses: Number(cache.miss || 0),
  };
}

// Records per second by tier and by label between two samples, and the cache lookups in between;
// null without an earlier sample, or when the server restarted (its counters began again at zero).
export function rates(previous, now) {
  if (!previous || now.uptime <= previous.uptime || now.hits < previous.hits || now.misses < previous.misses) return null;
  const seconds = now.uptime - previous.uptime;
  const per = (totals, before) => new Map([...totals].map(([k, n]) => [k, Math.max(0, n - (before.get(k) || 0)) / seconds]));
  return {
    tiers: per(now.tiers, previous.tiers),
    labels: per(now.labels, previous.labels),
    hits: now.hits - previous.hits,
    misses: now.misses - previous.misses,
  };
}

const SVG = "http://www.w3.org/2000/svg";

function sparkline(values) {
  const width = 120;
  const height = 22;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `records/s over the last ${values.length} samples`);
  const base = document.createElementNS(SVG, "line");
  for (const [k, v] of [["x1", 0], ["y1", height - 1], ["x2", width], ["y2", height - 1]]) base.setAttribute(k, String(v));
  svg.append(base);
  const top = Math.max(...values, 1e-9);
  const step = width / (SPARK_POINTS - 1);
  const offset = (SPARK_POINTS - values.length) * step;
  const points = values.map((v, i) => `${(offset + i * step).toFixed(1)},${(height - 2 - (v / top) * (height - 4)).toFixed(1)}`);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  return svg;
}

const live = {
  previous: null,
  history: new Map(), // tier -> records/s of the last SPARK_POINTS intervals
  timer: null,
  paused: false,

  resume() {
    this.paused = false;
    if (this.timer === null) this.poll();
  },

  schedule() {
    this.timer = this.paused ? null : setTimeout(() => this.poll(), POLL_MS);
  },

  async poll() {
    this.timer = null;
    if (document.hidden) {
      this.schedule();
      return;
    }
    try {
      this.show(await apiJson("v1/stats"));
    } catch (err) {
      // Without a token every poll would fail the same way: wait until one is given.
      if (err.status === 401) this.paused = true;
      $("live-status").textContent = `stats unavailable: ${err.message}`;
    }
    this.schedule();
  },

  show(stats) {
    const now = sample(stats);
    const delta = rates(this.previous, now);
    if (this.previous && !delta) this.history.clear(); // the server restarted

    const tierRows = [...now.tiers.keys()].sort().map((tier) => {
      const history = this.history.get(tier) || [];
      if (delta) history.push(delta.tiers.get(tier));
      if (history.length > SPARK_POINTS) history.shift();
      this.history.set(tier, history);
      const tr = row([[tier || "(none)"], [delta ? rate(delta.tiers.get(tier)) : "–", "n"]]);
      const spark = el("td");
      spark.append(sparkline(history.length ? history : [0]));
      tr.append(spark, el("td", now.tiers.get(tier).toLocaleString(), "n"));
      return tr;
    });
    replaceRows($("live-tiers").tBodies[0], tierRows);
    replaceRows(
      $("live-labels").tBodies[0],
      [...now.labels.keys()].sort().map((label) =>
        row([[label], [delta ? rate(delta.labels.get(label)) : "–", "n"], [now.labels.get(label).toLocaleString(), "n"]]),
      ),
    );

    const lookups = delta ? delta.hits + delta.misses : 0;
    $("cache-recent").textContent = !delta ? "–" : lookups ? ratio(delta.hits, lookups) : "no lookups";
    $("cache-lifetime").textContent = ratio(now.hits, now.hits + now.misses);
    const cache = stats.cache || {};
    $("cache-counts").textContent = [cache.exact, cache.template, cache.miss].map((v) => Number(v || 0).toLocaleString()).join(" / ");
    replaceRows(
      $("live-lanes").tBodies[0],
      (stats.lanes || []).map((lane) => row([[lane.lane], [Number(lane.queued || 0), "n"], [Number(lane.running || 0), "n"]])),
    );
    $("inflight").textContent = Number(stats.inflightTemplates || 0).toLocaleString();
    replaceRows(
      $("live-errors").tBodies[0],
      (stats.errors || []).map((e) => row([[e.kind], [Number(e.count || 0).toLocaleString(), "n"]])),
    );
    const up = Math.round(now.uptime);
    $("live-status").textContent =
      `up ${Math.floor(up / 3600)}h ${Math.floor((up % 3600) / 60)}m ${up % 60}s; ` +
      `sampled ${new Date().toLocaleTimeString()}, every ${POLL_MS / 1000} s`;
    this.previous = now;
  },
};

// ---- Start -------------------------------------------------------------------------------------

$("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
loadModel();
live.resume();
