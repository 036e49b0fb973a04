// The page at `/`: send each dropped photo to POST /invocations and show what the server answers;
// check a manifest CSV's photos against their expected quantities; say which model is loaded (GET /model).
// Every string from a file name, a CSV or a response is set with textContent, never parsed as HTML.
"use strict";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function pct(p) {
  return (100 * p).toFixed(1) + " %";
}

// Two different things, two different words: the review flag says the model is unsure of its count;
// the verdict compares the photo with the record's expected quantity.
const FLAG_WORDS = "low confidence";
const VERDICT_WORDS = { match: "record matches", mismatch: "record does not match", review: "check by hand" };

function flagExplanation(result) {
  return FLAG_WORDS + ": the model gives its count " + pct(result.confidence) +
    ", below this model's review threshold: a person should count this bin.";
}

// What an expected quantity was checked against: the count itself, or for a model that counts every
// bin, the tail class when the quantity is at or above its first count ("checked_against": ">15").
function tailChecked(result) {  // the tail's K when the record was checked against "more than K", else null
  const against = result.checked_against;
  return against && against.startsWith(">") ? against.slice(1) : null;
}

function expectedWords(result) {
  const k = tailChecked(result);
  return k !== null ? "p(more than " + k + ")" : "p(" + result.expected_quantity + ")";
}

function verdictExplanation(result) {
  const k = tailChecked(result);
  let p = expectedWords(result) + " = " + pct(result.p_expected);
  if (k !== null) {
    p += " (the record says " + result.expected_quantity + "; this model counts up to " + k +
      " one by one, so it checks 'more than " + k + "')";
  }
  if (result.verdict === "match") return VERDICT_WORDS.match + ": " + p + ", high enough to confirm the record.";
  if (result.verdict === "mismatch") return VERDICT_WORDS.mismatch + ": " + p + ", low enough to call the record wrong.";
  return VERDICT_WORDS.review + ": " + p + " is between the match and mismatch thresholds; look at the bin.";
}

const NOVEL_WORDS = "unlike training photos";

function novelExplanation(result) {
  return NOVEL_WORDS + ": this photo does not look like the photos the model was trained on (novelty score " +
    result.novelty_score + "), so its count is not trusted: a person should count this bin.";
}

// The answer's count interval, as predict.py --manifest writes it: "2-4", "3", "16+" (the tail).
function intervalText(interval) {
  if (!interval) return "";
  const [lo, hi] = interval;
  if (hi === null) return lo + "+";
  return lo === hi ? String(lo) : lo + "-" + hi;
}

function intervalWords(result) {
  const [lo, hi] = result.interval;
  const share = pct(result.interval_coverage === undefined ? 0.8 : result.interval_coverage).replace(".0 ", " ");
  const span = hi === null ? lo + " or more items" : lo === hi ? lo + (lo === 1 ? " item" : " items") : lo + " to " + hi + " items";
  return share + " interval: " + span + (result.interval_coverage === undefined ? "" : " (promised on photos like validation's)");
}

// Class labels: 0..max_count, plus ">max_count" last when the model has the overflow class.
function labels(result) {
  const n = result.probabilities.length;
  const hasOverflow = Object.prototype.hasOwnProperty.call(result, "overflow");
  return result.probabilities.map((_, i) => (hasOverflow && i === n - 1 ? ">" + (n - 2) : String(i)));
}

async function invoke(file, expected) {
  const headers = { "Content-Type": file.type || "application/octet-stream", Accept: "application/json" };
  if (expected !== "") headers["X-Expected-Quantity"] = expected;
  const response = await fetch("invocations", { method: "POST", headers, body: file });
  const text = await response.text();
  let body = null;
  try { body = JSON.parse(text); } catch (_) { /* not JSON: shown as text below */ }
  if (!response.ok) {
    const message = body && body.error ? body.error : text || response.statusText;
    throw new Error(response.status + ": " + message);
  }
  return body.predictions[0];
}

function countWords(result) {
  if (result.count === null) return "more than the model counts";
  return result.count === 1 ? "item" : "items";
}

function showResult(out, result, expected) {
  out.replaceChildren();
  const names = labels(result);
  const label = result.label !== undefined ? result.label : String(result.count);
  const count = el("div", "count", label);
  count.append(" ", el("small", null, countWords(result)));
  out.append(count, el("div", "confidence", "confidence " + pct(result.confidence)));
  // Models that count every bin: the interval and P(count > 5) with every answer.
  if (Array.isArray(result.interval)) out.append(el("div", "interval", intervalWords(result)));
  if (result.p_more_than_5 !== undefined) out.append(el("div", "more-than-5", "p(more than 5) = " + pct(result.p_more_than_5)));
  const flags = el("div", "flags");
  const explain = el("ul", "explain");
  if (result.unlike_training === true) {  // sent to review whatever the confidence
    flags.append(el("span", "badge novel", NOVEL_WORDS));
    explain.append(el("li", "novel", novelExplanation(result)));
  } else if (result.review === true) {
    flags.append(el("span", "badge flag", FLAG_WORDS));
    explain.append(el("li", "flag", flagExplanation(result)));
  }
  if (result.verdict) {
    flags.append(el("span", "badge verdict " + result.verdict, VERDICT_WORDS[result.verdict] || result.verdict));
    explain.append(el("li", "verdict", verdictExplanation(result)));
  }
  if (result.p_expected !== undefined) {
    flags.append(expectedWords(result) + " = " + pct(result.p_expected));
  } else if (expected !== "" && /^\d+$/.test(expected) && Number(expected) < names.length) {
    flags.append("p(" + expected + ") = " + pct(result.probabilities[Number(expected)]));
  }
  if (flags.childNodes.length) out.append(flags);
  if (explain.childNodes.length) out.append(explain);
  return names;
}

function showBars(bars, result, names) {
  bars.replaceChildren();
  const chosen = result.count === null ? result.probabilities.length - 1 : result.count;
  result.probabilities.forEach((p, i) => {
    const track = el("div");
    const bar = el("div", i === chosen ? "bar chosen" : "bar");
    bar.style.width = (100 * p).toFixed(1) + "%";
    bar.title = names[i] + ": " + pct(p);
    track.append(bar);
    bars.append(el("span", null, names[i]), track, el("span", null, pct(p)));
  });
}

// The larger view of a photo: one overlay, closed by a click anywhere or Escape.
function openViewer(src, caption) {
  const viewer = document.getElementById("viewer");
  document.getElementById("viewer-img").src = src;
  document.getElementById("viewer-img").alt = caption;
  document.getElementById("viewer-caption").textContent = caption;
  viewer.hidden = false;
}

function closeViewer() {
  document.getElementById("viewer").hidden = true;
}

function addCard(file) {
  const card = el("div", "card");
  card.dataset.name = file.name;
  let photo;
  if (file.type.startsWith("image/")) {
    photo = el("img", "photo");
    photo.alt = file.name;
    photo.src = URL.createObjectURL(file);
    photo.title = "click to enlarge";
    photo.addEventListener("click", () => openViewer(photo.src, file.name));
  } else {
    photo = el("div", "photo placeholder", file.type || "unknown type");
  }
  const side = el("div");
  const expected = el("label", "expected", "expected quantity ");
  const input = el("input");
  input.type = "number";
  input.min = "0";
  input.step = "1";
  expected.append(input);
  const out = el("div", "pending", "counting…");
  side.append(out, expected);
  const bars = el("div", "bars");
  card.append(photo, side, el("div", "name", file.name), bars);
  document.getElementById("results").append(card);

  async function run() {
    const quantity = input.value.trim();
    out.className = "pending";
    out.textContent = "counting…";
    card.querySelector(".error")?.remove();
    try {
      const result = await invoke(file, quantity);
      out.className = "answer";
      showBars(bars, result, showResult(out, result, quantity));
      card.dataset.state = "done";
    } catch (err) {
      out.replaceChildren();
      bars.replaceChildren();
      card.insertBefore(el("div", "error", err.message), bars);
      card.dataset.state = "error";
    }
  }
  input.addEventListener("change", run);
  run();
}

function addFiles(files) {
  for (const file of files) addCard(file);
}

// ---- Which model answers: GET /model (older servers answer 404; older artifacts have no provenance).
function describeModel(body) {
  const model = (body && body.model) || {};
  const net = (model.net && model.net.name) || "unknown network";
  const parts = [net];
  if (model.image_size) parts.push(model.image_size + " px");
  if (model.decision_rule) parts.push(model.decision_rule + " rule");
  if (Array.isArray(model.classes)) parts.push(model.classes.length + " classes");
  let text = "Model: " + parts.join(", ");
  const prov = body && body.provenance;
  const data = prov && prov.data;
  if (data && (data.kind || data.source)) {
    text += "; trained on " + (data.kind || "data") + (data.source ? " (" + data.source + ")" : "");
  } else {
    text += "; training data not recorded";
  }
  if (prov && prov.version) text += "; bincount " + prov.version;
  if (prov && prov.created) text += ", created " + prov.created;
  return text;
}

async function showModel() {
  const target = document.getElementById("model");
  try {
    const response = await fetch("model", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(String(response.status));
    target.textContent = describeModel(await response.json());
    target.dataset.state = "known";
  } catch (_) {
    target.textContent = "Model: this server does not say which model it runs (no GET /model).";
    target.dataset.state = "unknown";
  }
}

// ---- Manifest: the rows of a CSV (RFC 4180: quotes, doubled quotes, CRLF, a BOM), checked row by row.
function parseCsv(text) {
  const rows = [];
  let row = [], field = "", quoted = false, i = 0;
  text = text.replace(/^\uFEFF/, "");
  while (i < text.length) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i += 2; continue; }
      if (c === '"') { quoted = false; i += 1; continue; }
      field += c; i += 1; continue;
    }
    if (c === '"') { quoted = true; i += 1; continue; }
    if (c === ",") { row.push(field); field = ""; i += 1; continue; }
    if (c === "\r" || c === "\n") {
      row.push(field); field = "";
      if (c === "\r" && text[i + 1] === "\n") i += 1;
      i += 1;
      if (row.length > 1 || row[0] !== "") rows.push(row);
      row = [];
      continue;
    }
    field += c; i += 1;
  }
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  return rows;
}

const MANIFEST_COLUMNS = ["image", "expected_quantity"];

function manifestRows(text) {
  const [header, ...body] = parseCsv(text);
  const missing = MANIFEST_COLUMNS.filter((c) => !(header || []).includes(c));
  if (missing.length) {
    throw new Error("the manifest needs a header with columns " + MANIFEST_COLUMNS.join(", ") +
      " (missing: " + missing.join(", ") + "), e.g. image,expected_quantity / bins/00001.jpg,3");
  }
  const col = Object.fromEntries(MANIFEST_COLUMNS.map((c) => [c, header.indexOf(c)]));
  return body.map((cells) => ({ image: cells[col.image] || "", expected_quantity: cells[col.expected_quantity] || "" }));
}

// A row's photo: the selected file whose relative path or name ends the row's path.
function findPhoto(files, image) {
  const path = image.replace(/\\/g, "/").replace(/^\.\//, "");
  const base = path.split("/").pop();
  const byPath = files.filter((f) => f.webkitRelativePath && (f.webkitRelativePath === path || f.webkitRelativePath.endsWith("/" + path)));
  if (byPath.length === 1) return byPath[0];
  const byName = files.filter((f) => f.name === base);
  if (byName.length === 1) return byName[0];
  if (byName.length > 1) throw new Error(byName.length + " selected photos are named " + base + ": select one");
  throw new Error("no selected photo is named " + base);
}

function manifestCell(tr, text, className) {
  tr.append(el("td", className, text === undefined || text === null ? "" : text));
}

async function runManifest() {
  const csvInput = document.getElementById("manifest-csv");
  const photos = Array.from(document.getElementById("manifest-photos").files);
  const status = document.getElementById("manifest-status");
  const table = document.getElementById("manifest-results");
  const tbody = table.querySelector("tbody");
  tbody.replaceChildren();
  table.hidden = true;
  status.className = "muted";
  delete status.dataset.state;
  if (!csvInput.files.length) {
    status.textContent = "Choose the manifest CSV first.";
    return;
  }
  let rows;
  try {
    rows = manifestRows(await csvInput.files[0].text());
  } catch (err) {
    status.className = "error";
    status.textContent = csvInput.files[0].name + ": " + err.message;
    status.dataset.state = "error";
    return;
  }
  table.hidden = false;
  let failed = 0;
  for (const [index, row] of rows.entries()) {
    status.textContent = "checking row " + (index + 1) + " of " + rows.length + "…";
    const tr = el("tr");
    tr.dataset.row = String(index + 1);
    tbody.append(tr);
    let result = null, error = null;
    const quantity = row.expected_quantity.trim();
    try {
      if (!/^[0-9]+$/.test(quantity)) {
        throw new Error("expected_quantity must be a non-negative integer, got '" + quantity + "'");
      }
      result = await invoke(findPhoto(photos, row.image), String(Number(quantity)));
    } catch (err) {
      error = err.message.replace(/^\d{3}: /, "");
      failed += 1;
    }
    manifestCell(tr, index + 1);
    manifestCell(tr, row.image, "name");
    manifestCell(tr, quantity);
    if (result) {
      manifestCell(tr, result.verdict, "verdict " + result.verdict);
      tr.lastChild.title = verdictExplanation(result);
      manifestCell(tr, result.label !== undefined ? result.label : result.count);
      manifestCell(tr, pct(result.confidence));
      manifestCell(tr, result.p_expected === undefined ? "" : result.p_expected.toFixed(3));
      manifestCell(tr, result.checked_against);
      manifestCell(tr, intervalText(result.interval));
      manifestCell(tr, "");
      tr.dataset.verdict = result.verdict;
    } else {
      for (let k = 0; k < 6; k += 1) manifestCell(tr, "");
      manifestCell(tr, error, "error");
      tr.dataset.verdict = "error";
    }
  }
  const word = rows.length === 1 ? "row" : "rows";
  status.textContent = rows.length + " " + word + " checked" + (failed ? ", " + failed + " with an error (in its row)" : "") + ".";
  status.dataset.state = "done";
}

document.addEventListener("DOMContentLoaded", () => {
  const drop = document.getElementById("drop");
  const picker = document.getElementById("files");
  picker.addEventListener("change", () => { addFiles(picker.files); picker.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addFiles(e.dataTransfer.files);
  });
  document.getElementById("viewer").addEventListener("click", closeViewer);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeViewer(); });
  document.getElementById("manifest-run").addEventListener("click", runManifest);
  showModel();
});
