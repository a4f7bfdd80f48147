// The mcrx search page: plain JavaScript, no build step. It talks to the JSON API of
// mcrx/search/server.py: GET /api/collections, POST /api/search (multipart form).
"use strict";

const $ = (id) => document.getElementById(id);
let collections = [];

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

async function search() {
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
  $("error").hidden = true;
  $("status").textContent = "searching…";
  try {
    const response = await fetch("/api/search", { method: "POST", body: form });
    const data = await response.json().catch(() => ({ error: response.statusText }));
    if (!response.ok) throw new Error(data.error || data.detail || response.statusText);
    render(data);
  } catch (error) {
    $("status").textContent = "";
    $("results").replaceChildren();
    $("error").textContent = error.message;
    $("error").hidden = false;
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
  loadCollections().catch((error) => {
    $("error").textContent = `cannot reach the server: ${error.message}`;
    $("error").hidden = false;
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
