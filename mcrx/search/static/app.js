// The mcrx search page: plain JavaScript, no build step. It talks to the JSON API of
// mcrx/search/server.py: GET /api/collections, POST /api/search (multipart form).
// The page's address holds the query (?q=...&n=...&in=...&each=1&collection=...): a link
// to it runs that search, and each search updates it (back and forward replay them).
// Only the answer to the latest search is shown: an earlier one still in flight is
// aborted (AbortController, https://dom.spec.whatwg.org/#interface-abortcontroller), and
// any answer whose sequence number is not the latest is dropped.
"use strict";

const $ = (id) => document.getElementById(id);
let collections = [];
let latest = 0;  // sequence number of the latest search
let inFlight = null;  // its AbortController

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function current() {
  return collections.find((c) => c.name === $("collection").value) || collections[0];
}

function showCollection() {
  const c = current();
  if (!c) return;
  const counts = Object.entries(c.counts).map(([m, k]) => `${m} ${k}`).join(" · ");
  $("summary").textContent =
    `${c.items} items (${counts}) · model ${c.model.name || "?"} (${c.model.dim}-d, ` +
    `fingerprint ${c.model.fingerprint})`;
  const fileModality = $("file-modality");
  fileModality.replaceChildren(element("option", { value: "", text: "modality from the suffix" }));
  const filter = $("in");
  filter.replaceChildren(element("legend", { text: "results in" }));
  for (const m of c.modalities) {
    fileModality.append(element("option", { value: m, text: m }));
    if (!(m in c.counts)) continue;
    const box = element("input", { type: "checkbox", value: m, name: "in" });
    box.checked = true;
    filter.append(element("label", { class: "check" }, box, ` ${m}`));
  }
}

async function loadCollections() {
  const response = await fetch("/api/collections");
  collections = await response.json();
  const select = $("collection");
  for (const c of collections) select.append(element("option", { value: c.name, text: c.name }));
  showCollection();
}

function preview(hit) {
  const kind = hit.preview.kind;
  if (kind === "audio") {
    const audio = element("audio", { controls: "", preload: "none", src: hit.preview.url });
    return element("div", { class: "preview audio" }, audio);
  }
  if (kind === "text") {
    return element("div", { class: "preview text" }, element("p", { text: hit.text || "" }));
  }
  const img = element("img", { src: hit.preview.url, alt: `${hit.modality} ${hit.name}`,
                               loading: "lazy" });
  img.addEventListener("error", () => img.replaceWith(element("span", { text: "no preview" })));
  return element("div", { class: `preview ${hit.modality}` }, img);
}

function render(data) {
  const list = $("results");
  list.replaceChildren();
  $("status").textContent =
    `${data.results.length} results for ${data.query.join("  +  ")} · ${data.took_ms} ms`;
  const ranks = {};  // with "of each modality", ranks count within each modality
  data.results.forEach((hit, index) => {
    const key = $("each").checked ? hit.modality : "";
    ranks[key] = (ranks[key] || 0) + 1;
    const rank = ranks[key] - 1;
    const similar = element("button", { type: "button", class: "similar", text: "similar" });
    similar.addEventListener("click", () => {
      $("q").value = `#${hit.id}`;
      clearFile();
      search();
    });
    const score = element("span", { class: "score", text: hit.score.toFixed(3) });
    const bar = element("span", { class: "bar" });
    bar.style.width = `${Math.max(0, hit.score) * 100}%`;
    const row = element("li", { class: "result", "data-id": String(hit.id),
                                "data-modality": hit.modality },
      element("span", { class: "rank", text: String(rank + 1), title: `result ${index + 1}` }),
      preview(hit),
      element("div", { class: "meta" },
        element("div", { class: "line" },
          element("span", { class: `badge ${hit.modality}`, text: hit.modality }),
          element("span", { class: "folder", text: hit.folder }),
          element("span", { class: "id", text: `#${hit.id}` })),
        element("a", { class: "name", href: hit.file, title: hit.path, text: hit.name }),
        element("div", { class: "line" }, score, element("span", { class: "track" }, bar))),
      similar);
    list.append(row);
  });
}

function queryFromAddress() {
  const params = new URLSearchParams(window.location.search);
  const name = params.get("collection");
  if (name && collections.some((c) => c.name === name) && $("collection").value !== name) {
    $("collection").value = name;
    showCollection();
  }
  if (params.has("n")) {
    const n = params.get("n");
    if (![...$("n").options].some((o) => o.value === n)) $("n").append(element("option", { text: n }));
    $("n").value = n;
  }
  if (params.has("in")) {
    const wanted = params.get("in").split(",");
    for (const box of document.querySelectorAll("#in input")) box.checked = wanted.includes(box.value);
  }
  $("each").checked = params.get("each") === "1";
  $("q").value = params.get("q") || "";
  return $("q").value.trim() !== "";
}

function addressOf(selected) {
  const params = new URLSearchParams();
  params.set("q", $("q").value);
  if (collections.length > 1 && current()) params.set("collection", current().name);
  params.set("n", $("n").value);
  const boxes = document.querySelectorAll("#in input");
  if (selected.length !== boxes.length) params.set("in", selected.join(","));
  if ($("each").checked) params.set("each", "1");
  return `?${params}`;
}

async function search(fromAddress = false) {
  const form = new FormData();
  const c = current();
  form.set("collection", c ? c.name : "");
  form.set("q", $("q").value);
  form.set("n", $("n").value);
  const selected = [...document.querySelectorAll("#in input:checked")].map((b) => b.value);
  form.set("in", selected.join(","));
  form.set("each", $("each").checked ? "1" : "0");
  const file = $("file").files[0];
  if (file) {
    form.set("file", file);
    form.set("file_modality", $("file-modality").value);
    form.set("file_weight", $("file-weight").value || "1");
  }
  if (!fromAddress && !file) {  // a typed query is a link: keep it in the address
    const address = addressOf(selected);
    if (address !== window.location.search) window.history.pushState(null, "", address);
  }
  const sequence = ++latest;
  if (inFlight) inFlight.abort();
  const controller = new AbortController();
  inFlight = controller;
  $("error").hidden = true;
  $("status").textContent = "searching…";
  try {
    const response = await fetch("/api/search", { method: "POST", body: form,
                                                  signal: controller.signal });
    const data = await response.json().catch(() => ({ error: response.statusText }));
    if (sequence !== latest) return;  // a later search was started: this answer is stale
    if (!response.ok) throw new Error(data.error || data.detail || response.statusText);
    render(data);
  } catch (error) {
    if (sequence !== latest || error.name === "AbortError") return;
    $("status").textContent = "";
    $("results").replaceChildren();
    $("error").textContent = error.message;
    $("error").hidden = false;
  } finally {
    if (inFlight === controller) inFlight = null;
  }
}

function setFile(file) {
  const transfer = new DataTransfer();
  transfer.items.add(file);
  $("file").files = transfer.files;
  fileChosen();
}

function fileChosen() {
  const file = $("file").files[0];
  $("drop-text").textContent = file ? `${file.name} (${Math.ceil(file.size / 1024)} KiB)`
                                    : "Drop a file here (or click) to search with it";
  $("drop").classList.toggle("has-file", Boolean(file));
  $("clear-file").hidden = !file;
}

function clearFile() {
  $("file").value = "";
  fileChosen();
}

document.addEventListener("DOMContentLoaded", () => {
  loadCollections().then(() => {
    if (queryFromAddress()) search(true);
  }).catch((error) => {
    $("error").textContent = `cannot reach the server: ${error.message}`;
    $("error").hidden = false;
  });
  window.addEventListener("popstate", () => {
    clearFile();
    if (queryFromAddress()) search(true);
    else {
      $("results").replaceChildren();
      $("status").textContent = "";
    }
  });
  $("collection").addEventListener("change", showCollection);
  $("each").addEventListener("change", () => { if ($("results").children.length) search(); });
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  $("file").addEventListener("change", () => {
    fileChosen();
    if ($("file").files[0]) search();
  });
  $("clear-file").addEventListener("click", clearFile);
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) {
      setFile(event.dataTransfer.files[0]);
      search();
    }
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") $("file").click();
  });
});
