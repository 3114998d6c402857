// altimage console: small comforts on top of pages that work without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Move focus to the error summary, so screen readers announce what to fix.
  const summary = document.getElementById("error-summary");
  if (summary) summary.focus();

  // Confirm destructive buttons.
  for (const button of document.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) event.preventDefault();
    });
  }

  // Copy buttons beside secrets and texts (the text stays selectable without them).
  for (const element of document.querySelectorAll("[data-copy]")) {
    if (!navigator.clipboard) break;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "small secondary copy";
    button.textContent = "Copy";
    button.addEventListener("click", async () => {
      await navigator.clipboard.writeText(element.innerText.trim());
      button.textContent = "Copied";
    });
    element.insertAdjacentElement("afterend", button);
  }

  // A preview of the chosen images from the browser's own memory: nothing is uploaded for it.
  const input = document.getElementById("images");
  const preview = document.getElementById("preview");
  if (input && preview) {
    input.addEventListener("change", () => {
      preview.replaceChildren();
      for (const file of input.files) {
        const image = document.createElement("img");
        image.src = URL.createObjectURL(file);
        image.alt = "Preview of " + file.name;
        preview.append(image);
      }
    });
  }
});
