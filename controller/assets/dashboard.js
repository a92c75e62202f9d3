// Vigil dashboard: enhancements only. Every page reads and every form works
// without this script. Served from the binary (CSP script-src 'self').
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // A copy button beside ids an operator pastes into tickets and searches.
  if (navigator.clipboard) {
    for (const el of document.querySelectorAll("[data-copy]")) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy " + el.textContent);
      button.addEventListener("click", () => {
        navigator.clipboard.writeText(el.textContent).then(() => {
          button.textContent = "Copied";
        });
      });
      el.after(button);
    }
  }
  // A confirmation form's button is disabled once pressed: no double post.
  for (const form of document.querySelectorAll("form[action='/dashboard/act']")) {
    form.addEventListener("submit", () => {
      for (const b of form.querySelectorAll("button[type=submit]")) {
        b.disabled = true;
      }
    });
  }
});
