// Progressive enhancement of the upload form: drag-and-drop, paste, preview, before/after,
// progress and clear errors. Without this script the form still posts and returns a result page.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.fetch || !window.FormData) return;
  var fileInput = document.getElementById("file");
  var drop = document.getElementById("drop");
  var submit = document.getElementById("submit");
  var progress = document.getElementById("progress");
  var progressText = document.getElementById("progress-text");
  var errorBox = document.getElementById("error");
  var result = document.getElementById("result");
  var before = document.getElementById("before");
  var after = document.getElementById("after");
  var facts = document.getElementById("facts");
  var download = document.getElementById("download");
  var bgSelect = document.getElementById("bg_color");
  var customColor = document.getElementById("custom_color");
  var chosen = null;
  var urls = [];

  var MESSAGES = {
    file_too_large: "That image is too large. Try a smaller photo.",
    unsupported_format: "That file is not an image we can read (JPEG, PNG, WEBP, GIF, BMP or TIFF).",
    invalid_image: "That image could not be decoded: it may be truncated or corrupt.",
    no_person_found: "No person was found in this photo. Try a photo where a person is clearly visible.",
    model_unavailable: "The model is not available right now. Please try again later.",
    busy: "The server is busy. Please try again in a few seconds.",
    missing_file: "Choose a photo first.",
    empty_file: "That file is empty."
  };

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
  }
  function clearError() { errorBox.hidden = true; errorBox.textContent = ""; }
  function track(url) { urls.push(url); return url; }
  function releaseUrls() { while (urls.length) URL.revokeObjectURL(urls.pop()); }

  function setFile(file) {
    if (!file) return;
    if (file.type && file.type.indexOf("image/") !== 0) {
      showError(MESSAGES.unsupported_format);
      return;
    }
    clearError();
    chosen = file;
    releaseUrls();
    before.src = track(URL.createObjectURL(file));
    drop.querySelector("strong").textContent = file.name || "pasted image";
  }

  fileInput.addEventListener("change", function () { setFile(fileInput.files[0]); });
  ["dragenter", "dragover"].forEach(function (ev) {
    drop.addEventListener(ev, function (e) { e.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (ev) {
    drop.addEventListener(ev, function (e) { e.preventDefault(); drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (e) {
    if (e.dataTransfer && e.dataTransfer.files.length) setFile(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", function (e) {
    var items = (e.clipboardData && e.clipboardData.files) || [];
    if (items.length) setFile(items[0]);
  });
  customColor.addEventListener("input", function () {
    var value = customColor.value.replace("#", "");
    var option = bgSelect.querySelector("option[data-custom]");
    if (!option) {
      option = document.createElement("option");
      option.setAttribute("data-custom", "1");
      bgSelect.appendChild(option);
    }
    option.value = value;
    option.textContent = "#" + value;
    bgSelect.value = value;
  });

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var file = chosen || fileInput.files[0];
    if (!file) { showError(MESSAGES.missing_file); return; }
    clearError();
    var data = new FormData(form);
    data.set("file", file, file.name || "pasted.png");
    var bgFile = document.getElementById("bg_image_file").files[0];
    if (!bgFile) data.delete("bg_image_file");
    submit.disabled = true;
    progress.hidden = false;
    progressText.textContent = "Uploading…";
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/remove");
    xhr.responseType = "blob";
    xhr.upload.onprogress = function (ev) {
      if (ev.lengthComputable) progressText.textContent = "Uploading… " + Math.round(100 * ev.loaded / ev.total) + "%";
    };
    xhr.upload.onload = function () { progressText.textContent = "Finding the person and cutting out…"; };
    xhr.onerror = function () { done(); showError("The connection failed. Check your network and try again."); };
    xhr.onload = function () {
      done();
      if (xhr.status === 200) { showResult(xhr); return; }
      if (xhr.status === 413) { showError(MESSAGES.file_too_large); return; }
      xhr.response.text().then(function (text) {
        var message = "Something went wrong (HTTP " + xhr.status + ").";
        try {
          var err = JSON.parse(text).errors[0];
          message = MESSAGES[err.code] || err.title || message;
        } catch (ignored) { /* not JSON */ }
        showError(message);
      });
    };
    xhr.send(data);
  });

  function done() { submit.disabled = false; progress.hidden = true; }

  function showResult(xhr) {
    var url = track(URL.createObjectURL(xhr.response));
    after.src = url;
    download.href = url;
    var disposition = xhr.getResponseHeader("Content-Disposition") || "";
    var match = /filename="([^"]+)"/.exec(disposition);
    download.setAttribute("download", match ? match[1] : "cutout.png");
    facts.textContent = xhr.getResponseHeader("X-Width") + "×" + xhr.getResponseHeader("X-Height") +
      " px · person score " + Number(xhr.getResponseHeader("X-Person-Score")).toFixed(2);
    result.hidden = false;
    result.scrollIntoView({ behavior: "smooth", block: "start" });
  }
}());
