// The web page: draw or upload, send the PNG to /v1/predict, show the model's input and top 3.
"use strict";

const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");
const fileInput = document.getElementById("file");
const statusLine = document.getElementById("status");
let drawing = false;
let last = null;

function clearCanvas() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
}

function position(event) {
  const box = canvas.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * canvas.width) / box.width,
    y: ((event.clientY - box.top) * canvas.height) / box.height,
  };
}

function stroke(to) {
  ctx.strokeStyle = "#111";
  ctx.lineWidth = 22;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(last.x, last.y);
  ctx.lineTo(to.x, to.y);
  ctx.stroke();
  last = to;
}

canvas.addEventListener("pointerdown", (event) => {
  drawing = true;
  canvas.setPointerCapture(event.pointerId);
  last = position(event);
  stroke(last);
});
canvas.addEventListener("pointermove", (event) => {
  if (drawing) stroke(position(event));
});
canvas.addEventListener("pointerup", () => {
  if (!drawing) return;
  drawing = false;
  canvas.toBlob((blob) => predict(blob, "drawing.png"), "image/png");
});

document.getElementById("clear").addEventListener("click", () => {
  clearCanvas();
  showResult(null);
});

fileInput.addEventListener("change", () => {
  if (fileInput.files.length) upload(fileInput.files[0]);
});
canvas.addEventListener("dragover", (event) => {
  event.preventDefault();
  canvas.classList.add("dragging");
});
canvas.addEventListener("dragleave", () => canvas.classList.remove("dragging"));
canvas.addEventListener("drop", (event) => {
  event.preventDefault();
  canvas.classList.remove("dragging");
  if (event.dataTransfer.files.length) upload(event.dataTransfer.files[0]);
});

function upload(file) {
  // Show the photo on the canvas too, so the page reads left to right.
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => {
    clearCanvas();
    const scale = Math.min(canvas.width / image.width, canvas.height / image.height);
    const w = image.width * scale;
    const h = image.height * scale;
    ctx.imageSmoothingEnabled = scale < 1;
    ctx.drawImage(image, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    URL.revokeObjectURL(url);
  };
  image.src = url;
  predict(file, file.name);
}

async function predict(blob, name) {
  statusLine.textContent = "classifying…";
  statusLine.classList.remove("error");
  const form = new FormData();
  form.append("files", blob, name);
  try {
    const response = await fetch("/v1/predict?top_k=3&return_input=true", {
      method: "POST",
      body: form,
      headers: keyHeaders(),
    });
    if (response.status === 401) askForKey();
    const body = await response.json();
    if (!response.ok) throw new Error(body.detail || response.statusText);
    showResult(body.predictions[0]);
    statusLine.textContent = `${name} · engine ${body.engine}`;
  } catch (error) {
    showResult(null);
    statusLine.textContent = `error: ${error.message}`;
    statusLine.classList.add("error");
  }
}

function showResult(prediction) {
  const bars = document.getElementById("bars");
  const preview = document.getElementById("preview");
  bars.replaceChildren();
  document.getElementById("top-class").textContent = prediction ? prediction.class : "—";
  if (!prediction) {
    preview.removeAttribute("src");
    statusLine.textContent = "";
    return;
  }
  preview.src = prediction.input_png;
  for (const { class: name, probability } of prediction.top) {
    const item = document.createElement("li");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = name;
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(100 * probability).toFixed(1)} %`;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${Math.max(0.5, 100 * probability)}%`;
    track.append(fill);
    item.append(label, pct, track);
    bars.append(item);
  }
}

// The API key, when the server asks for one: kept for this tab only (sessionStorage), sent as
// X-API-Key.
const KEY = "convnet-api-key";
const keyForm = document.getElementById("key-form");

function keyHeaders() {
  const key = sessionStorage.getItem(KEY);
  return key ? { "X-API-Key": key } : {};
}

function askForKey() {
  keyForm.hidden = false;
  document.getElementById("model").textContent = sessionStorage.getItem(KEY)
    ? "the server refused this API key"
    : "the server needs an API key";
  document.getElementById("api-key").focus();
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, document.getElementById("api-key").value.trim());
  describeModel();
});

async function describeModel() {
  const response = await fetch("/v1/model", { headers: keyHeaders() });
  if (response.status === 401) return askForKey();
  keyForm.hidden = true;
  const info = await response.json();
  const accuracy = info.metrics.test_accuracy;
  document.getElementById("model").textContent =
    `run ${info.run} · preset ${info.preset} · ${info.class_names.length} classes` +
    (accuracy === undefined ? "" : ` · test accuracy ${(100 * accuracy).toFixed(1)} %`);
}

clearCanvas();
describeModel();
