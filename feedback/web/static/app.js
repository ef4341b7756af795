// The feedback page's one script: uploads, verdicts, heat maps, the access token, the reviewer's name. No framework,
// no CDN; cards are rendered by the server (/cards/<id>) and inserted as they are.
"use strict";

const TOKEN_KEY = "catdog-feedback-token";
const NAME_KEY = "catdog-feedback-name";
const authRequired = () => document.body.dataset.authRequired === "true";

function askToken() {
  const dialog = document.getElementById("token-dialog");
  const input = dialog.querySelector("input[name=token]");
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const token = dialog.returnValue === "ok" ? input.value.trim() : "";
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      resolve(token);
    }, { once: true });
    dialog.showModal();
  });
}

// The reviewer's name: asked once (when the app has APP_TOKEN, a verdict needs one) and remembered.
function rememberName(name) {
  localStorage.setItem(NAME_KEY, name);
  const input = document.querySelector("[data-testid=reviewer-name]");
  if (input) input.value = name;
  nameLinks();
}

function askName() {
  const dialog = document.getElementById("name-dialog");
  const input = dialog.querySelector("input[name=name]");
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const name = dialog.returnValue === "ok" ? input.value.trim() : "";
      if (name) rememberName(name);
      resolve(name);
    }, { once: true });
    dialog.showModal();
  });
}

// Links to the second-opinion queue carry the remembered name (its photos are the ones this person has not judged).
function nameLinks() {
  const name = (localStorage.getItem(NAME_KEY) || "").trim();
  for (const link of document.querySelectorAll("a[data-needs-name]")) {
    const url = new URL(link.getAttribute("href"), location.href);
    if (name) url.searchParams.set("by", name);
    else url.searchParams.delete("by");
    link.setAttribute("href", url.pathname + url.search);
  }
}

// fetch() for routes that change data: sends the token when the app asks for one, asks again on 401.
async function writeFetch(url, options) {
  const send = (token) => fetch(url, {
    ...options,
    headers: { ...(options.headers || {}), "X-Feedback-Client": "page",
               ...(token ? { Authorization: `Bearer ${token}` } : {}) },
  });
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  if (authRequired() && !token) token = await askToken();
  let response = await send(token);
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    token = await askToken();
    if (token) response = await send(token);
  }
  return response;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || body);
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function cardElement(id) {
  const response = await fetch(`/cards/${encodeURIComponent(id)}`);
  if (!response.ok) throw new Error(await errorText(response));
  const template = document.createElement("template");
  template.innerHTML = (await response.text()).trim(); // server-rendered and escaped
  return template.content.firstElementChild;
}

function placeholder(name) {
  const card = document.createElement("article");
  card.className = "card pending";
  card.setAttribute("data-testid", "upload-pending");
  const text = document.createElement("p");
  text.textContent = `Asking the model about ${name}…`;
  card.append(text);
  return card;
}

async function uploadOne(file, results) {
  const card = placeholder(file.name);
  results.prepend(card);
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const response = await fetch("/api/predict?explain=true", {
      method: "POST", body: form, headers: { "X-Feedback-Client": "page" },
    });
    if (!response.ok) throw new Error(await errorText(response));
    const prediction = await response.json();
    card.replaceWith(await cardElement(prediction.id));
    await refreshQueueLength();
  } catch (error) {
    card.classList.add("failed");
    card.setAttribute("data-testid", "upload-error");
    card.firstElementChild.textContent = `${file.name}: ${error.message}`;
  }
}

async function uploadAll(files) {
  const results = document.querySelector("[data-testid=results]");
  for (const file of files) await uploadOne(file, results); // one at a time: the predictor has few cores
}

function showQueueLength(length) {
  for (const badge of document.querySelectorAll("[data-testid=queue-count], [data-testid=nav-queue-count]")) {
    badge.textContent = String(length);
  }
}

async function refreshQueueLength() {
  const response = await fetch("/api/review-queue?limit=0");
  if (response.ok) showQueueLength((await response.json()).length);
}

// A card re-rendered after a verdict keeps the heat map the old one showed (the canvas as drawn,
// and the toggle pressed): the verdict changes the card's text, not what the person was looking at.
function keepHeatmap(from, to) {
  const canvas = from.querySelector("canvas.heatmap");
  if (canvas.hidden) return;
  to.querySelector("canvas.heatmap").replaceWith(canvas);
  to.querySelector("[data-testid=toggle-heatmap]").setAttribute("aria-pressed", "true");
}

async function validate(card, label) {
  const error = card.querySelector("[data-testid=card-error]");
  let by = (localStorage.getItem(NAME_KEY) || "").trim();
  if (!by && authRequired()) by = await askName();
  if (!by && authRequired()) {
    error.textContent = "A verdict needs your name (this app records who gives each one): enter it at the top.";
    error.hidden = false;
    return;
  }
  for (const button of card.querySelectorAll("button")) button.disabled = true;
  try {
    const response = await writeFetch(`/api/predictions/${encodeURIComponent(card.dataset.predictionId)}/validation`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(by ? { label, by } : { label }),
    });
    if (!response.ok) throw new Error(await errorText(response));
    await refreshQueueLength();
    if (card.closest("[data-testid=review-queue]")) {
      card.remove();
      const second = document.querySelector("[data-testid=second-opinion-count]");
      if (second) second.textContent = String(Math.max(0, Number(second.textContent) - 1));
      const queue = document.querySelector("[data-testid=review-queue]");
      if (!queue.querySelector("[data-testid=prediction]")) {
        document.querySelector("[data-testid=queue-empty]").hidden = false;
      }
    } else {
      const fresh = await cardElement(card.dataset.predictionId);
      keepHeatmap(card, fresh);
      card.replaceWith(fresh);
    }
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
    for (const button of card.querySelectorAll("button")) button.disabled = false;
  }
}

// The heat map: the explanation's grid ("values": Grad-CAM in [0, 1], or, from models exported
// before Grad-CAM, occlusion saliency in any range) drawn over the photo, positive values only,
// scaled to the grid's maximum.
function explanationGrid(explanation) {
  return explanation && Array.isArray(explanation.values) && explanation.values.length ? explanation.values : null;
}

// The colour ramp of catdog/gradcam.py (what the predictor's overlay PNG and the evaluate gallery use).
const RAMP = [[0, [0, 0, 128]], [0.125, [0, 0, 255]], [0.375, [0, 255, 255]], [0.625, [255, 255, 0]],
              [0.875, [255, 0, 0]], [1, [128, 0, 0]]];

function rampColour(v) {
  for (let k = 1; k < RAMP.length; k++) {
    const [at, rgb] = RAMP[k], [before, from] = RAMP[k - 1];
    if (v <= at) return from.map((c, i) => c + ((rgb[i] - c) * (v - before)) / (at - before));
  }
  return RAMP[RAMP.length - 1][1];
}

// The grid painted one pixel a cell, then drawn at the photo's size with smoothing (bilinear).
function drawHeatmap(canvas, grid, image) {
  const rows = grid.length, cols = grid[0].length;
  const peak = Math.max(1e-9, ...grid.flat().map((v) => Math.max(0, v)));
  const small = document.createElement("canvas");
  small.width = cols;
  small.height = rows;
  const cells = small.getContext("2d").createImageData(cols, rows);
  grid.flat().forEach((value, k) => {
    const v = Math.max(0, value) / peak;
    cells.data.set([...rampColour(v).map(Math.round), Math.round(255 * (0.2 + 0.45 * v))], 4 * k);
  });
  small.getContext("2d").putImageData(cells, 0, 0);
  canvas.width = image.naturalWidth || image.width;
  canvas.height = image.naturalHeight || image.height;
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = true;
  context.imageSmoothingQuality = "high";
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.drawImage(small, 0, 0, canvas.width, canvas.height);
}

async function toggleHeatmap(card, button) {
  const canvas = card.querySelector("canvas.heatmap");
  if (!canvas.hidden) {
    canvas.hidden = true;
    button.setAttribute("aria-pressed", "false");
    return;
  }
  let explanation = JSON.parse(card.dataset.explanation || "null");
  const error = card.querySelector("[data-testid=card-error]");
  if (!explanationGrid(explanation)) {
    button.disabled = true;
    const response = await fetch(`/api/predictions/${encodeURIComponent(card.dataset.predictionId)}/explanation`,
                                 { method: "POST" });
    button.disabled = false;
    if (!response.ok) {
      error.textContent = `No heat map: ${await errorText(response)}`;
      error.hidden = false;
      return;
    }
    explanation = (await response.json()).explanation;
    card.dataset.explanation = JSON.stringify(explanation);
  }
  const grid = explanationGrid(explanation);
  if (!grid) {
    error.textContent = "The predictor gave no heat map for this photo.";
    error.hidden = false;
    return;
  }
  const image = card.querySelector("img");
  // a click right after the upload can come before the photo has loaded: its natural size is then
  // unknown (0), so wait for it rather than draw at the box's size
  if (!image.complete || !image.naturalWidth) await image.decode().catch(() => {});
  drawHeatmap(canvas, grid, image);
  canvas.hidden = false;
  button.setAttribute("aria-pressed", "true");
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  const card = button && button.closest("[data-testid=prediction]");
  if (!card) return;
  if (button.dataset.action === "validate") validate(card, button.dataset.label);
  if (button.dataset.action === "heatmap") toggleHeatmap(card, button);
});

document.addEventListener("DOMContentLoaded", () => {
  const name = document.querySelector("[data-testid=reviewer-name]");
  if (name) {
    name.value = localStorage.getItem(NAME_KEY) || "";
    name.addEventListener("change", () => rememberName(name.value.trim()));
  }
  nameLinks();
  // the second-opinion queue opened without a name while this browser remembers one: show that person's
  const asked = document.querySelector("[data-testid=second-opinion-for]");
  const remembered = (localStorage.getItem(NAME_KEY) || "").trim();
  if (asked && !asked.dataset.by && remembered) {
    const url = new URL(location.href);
    url.searchParams.set("by", remembered);
    location.replace(url.pathname + url.search);
  }
  const input = document.querySelector("[data-testid=photo-input]");
  if (!input) return;
  input.addEventListener("change", () => {
    uploadAll([...input.files]);
    input.value = "";
  });
  const zone = document.querySelector("[data-testid=dropzone]");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    uploadAll([...event.dataTransfer.files].filter((f) => f.type.startsWith("image/") || f.type === ""));
  });
});
