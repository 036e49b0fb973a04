// The page at `/`: send each dropped photo to POST /invocations and show what the server answers.
// Every string from a file name or a response is set with textContent, never parsed as HTML.
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

function showResult(out, result, expected) {
  out.replaceChildren();
  const names = labels(result);
  const label = result.label !== undefined ? result.label : String(result.count);
  const count = el("div", "count", label);
  count.append(" ", el("small", null, result.count === null ? "more than the model counts" : "items"));
  out.append(count, el("div", "confidence", "confidence " + pct(result.confidence)));
  const flags = el("div", "flags");
  if (result.review === true) flags.append(el("span", "badge review", "review"));
  if (result.verdict) flags.append(el("span", "badge " + result.verdict, result.verdict));
  if (result.p_expected !== undefined) {
    flags.append("p(" + result.expected_quantity + ") = " + pct(result.p_expected));
  } else if (expected !== "" && /^\d+$/.test(expected) && Number(expected) < names.length) {
    flags.append("p(" + expected + ") = " + pct(result.probabilities[Number(expected)]));
  }
  if (flags.childNodes.length) out.append(flags);
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

function addCard(file) {
  const card = el("div", "card");
  card.dataset.name = file.name;
  let photo;
  if (file.type.startsWith("image/")) {
    photo = el("img", "photo");
    photo.alt = file.name;
    photo.src = URL.createObjectURL(file);
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
});
