// Progressive enhancement of the upload form: drag-and-drop, paste, preview, before/after,
// progress and clear errors. Without this script the form still posts and returns a result page.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.fetch || !window.FormData) return;
  var fileInput = document.getElementById("file");
  var drop = document.getElementById("drop");
  var dropLabel = drop.querySelector("strong");
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
  var photoUrl = null;   // the "Before" preview of the chosen photo
  var cutoutUrl = null;  // the "After" cutout and its download link
  var pending = null;    // the upload in flight, aborted when another photo is chosen

  // A dropped or pasted photo never reaches the file input in every browser, so the script checks
  // for a photo itself; `required` stays in the markup for the no-JavaScript form.
  fileInput.required = false;

  var MESSAGES = {
    unsupported_format: "That file is not an image we can read (JPEG, PNG, WEBP, GIF, BMP or TIFF).",
    no_person_found: "No person was found in this photo. Try a photo where a person is clearly visible.",
    model_unavailable: "This engine is not available on this server.",  // the detail says what is missing
    busy: "The server is busy. Please try again in a few seconds.",
    missing_file: "Choose a photo first.",
    empty_file: "That file is empty."
  };

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
  }
  function clearError() { errorBox.hidden = true; errorBox.textContent = ""; }

  // The API's error as a sentence: our wording for its code (or its title), then its detail,
  // which says which field was wrong and why, or what an operator must install.
  function errorMessage(err, status) {
    var text = MESSAGES[err.code] || err.title || "Something went wrong (HTTP " + status + ").";
    if (!err.detail) return text;
    return text.replace(/\.$/, "") + ": " + err.detail + (/[.!?]$/.test(err.detail) ? "" : ".");
  }

  // Forget the previous cutout: it belongs to another photo (or to options now changed).
  function clearResult() {
    if (pending) { pending.abort(); pending = null; done(); }
    result.hidden = true;
    after.removeAttribute("src");
    download.removeAttribute("href");
    download.setAttribute("download", "cutout.png");
    facts.textContent = "";
    if (cutoutUrl) { URL.revokeObjectURL(cutoutUrl); cutoutUrl = null; }
  }

  function setFile(file) {
    if (!file) return;
    clearResult();
    if (file.type && file.type.indexOf("image/") !== 0) {
      showError(MESSAGES.unsupported_format);
      return;
    }
    clearError();
    chosen = file;
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    photoUrl = URL.createObjectURL(file);
    before.src = photoUrl;
    dropLabel.textContent = file.name || "pasted image";
  }

  // Put a dropped or pasted file into the input too, so what the form shows is what is sent.
  function adopt(files) {
    if (!files || !files.length) return;
    try { fileInput.files = files; } catch (ignored) { /* read-only in old browsers */ }
    setFile(files[0]);
  }

  fileInput.addEventListener("change", function () { setFile(fileInput.files[0]); });
  ["dragenter", "dragover"].forEach(function (ev) {
    drop.addEventListener(ev, function (e) { e.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (ev) {
    drop.addEventListener(ev, function (e) { e.preventDefault(); drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (e) { adopt(e.dataTransfer && e.dataTransfer.files); });
  document.addEventListener("paste", function (e) {
    var files = e.clipboardData && e.clipboardData.files;
    if (files && files.length) { e.preventDefault(); adopt(files); }
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
    clearResult();
    clearError();
    var data = new FormData(form);
    data.set("file", file, file.name || "pasted.png");
    var bgFile = document.getElementById("bg_image_file").files[0];
    if (!bgFile) data.delete("bg_image_file");
    submit.disabled = true;
    progress.hidden = false;
    progressText.textContent = "Uploading…";
    var xhr = new XMLHttpRequest();
    pending = xhr;
    xhr.open("POST", "/api/remove");
    xhr.responseType = "blob";
    xhr.upload.onprogress = function (ev) {
      if (ev.lengthComputable) progressText.textContent = "Uploading… " + Math.round(100 * ev.loaded / ev.total) + "%";
    };
    xhr.upload.onload = function () { progressText.textContent = "Finding the person and cutting out…"; };
    xhr.onerror = function () {
      if (pending !== xhr) return;
      pending = null;
      done();
      showError("The connection failed. Check your network and try again.");
    };
    xhr.onload = function () {
      if (pending !== xhr) return;  // a newer photo was chosen meanwhile
      pending = null;
      done();
      if (xhr.status === 200) { showResult(xhr, file); return; }
      xhr.response.text().then(function (text) {
        // A proxy in front may refuse a large upload with its own (non-JSON) 413 page.
        var message = xhr.status === 413 ? "That image is too large. Try a smaller photo." : "Something went wrong (HTTP " + xhr.status + ").";
        try {
          message = errorMessage(JSON.parse(text).errors[0], xhr.status);
        } catch (ignored) { /* not JSON */ }
        showError(message);
      });
    };
    xhr.send(data);
  });

  function done() { submit.disabled = false; progress.hidden = true; }

  function showResult(xhr, file) {
    if (file !== chosen) return;  // never show a cutout beside another photo
    cutoutUrl = URL.createObjectURL(xhr.response);
    after.src = cutoutUrl;
    download.href = cutoutUrl;
    var disposition = xhr.getResponseHeader("Content-Disposition") || "";
    var match = /filename="([^"]+)"/.exec(disposition);
    download.setAttribute("download", match ? match[1] : "cutout.png");
    facts.textContent = xhr.getResponseHeader("X-Width") + "×" + xhr.getResponseHeader("X-Height") +
      " px · person score " + Number(xhr.getResponseHeader("X-Person-Score")).toFixed(2);
    result.hidden = false;
    result.scrollIntoView({ behavior: "smooth", block: "start" });
  }
}());
