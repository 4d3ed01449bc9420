// Herald console: the little script the pages use, loaded from /console/assets (no inline script; the
// CSP forbids it). Every page works without it; it only adds:
// - [data-copy=ID] buttons copy the text of the element ID to the clipboard;
// - form[data-confirm] asks before submitting;
// - [data-refresh=MS] elements are replaced every MS milliseconds by the same element of the page
//   fetched again (a delivery being attempted, a test event arriving), while the tab is visible;
// - [data-back] links go back in history.
"use strict";
(function () {
  document.addEventListener("click", function (event) {
    var copy = event.target.closest("[data-copy]");
    if (copy) {
      var id = copy.getAttribute("data-copy");
      var source = document.getElementById(id);
      if (source && navigator.clipboard) {
        navigator.clipboard.writeText(source.textContent.trim()).then(function () {
          var note = document.querySelector('[data-copied="' + id + '"]');
          if (note) { note.hidden = false; }
        });
      }
      return;
    }
    var back = event.target.closest("[data-back]");
    if (back && window.history.length > 1) {
      event.preventDefault();
      window.history.back();
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  function follow(element) {
    var every = parseInt(element.getAttribute("data-refresh"), 10);
    if (!(every > 0) || !element.id) { return; }
    var id = element.id;
    window.setTimeout(function tick() {
      if (document.hidden) { window.setTimeout(tick, every); return; }
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html === null) { return; }
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(id);
          var current = document.getElementById(id);
          if (fresh && current) {
            current.replaceWith(document.importNode(fresh, true));
            follow(document.getElementById(id));
          }
        })
        .catch(function () { window.setTimeout(tick, every * 2); });
    }, every);
  }
  document.querySelectorAll("[data-refresh]").forEach(follow);
})();
