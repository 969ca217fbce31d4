/* bertspec handbook: page layout, the filter box, the printable card. No network. */
(function () {
  "use strict";

  function layout() {
    var handbook = document.getElementById("handbook");
    var title = document.getElementById("title");
    if (!handbook || !title) { return; }
    title.parentNode.insertBefore(handbook, title.nextSibling);
    // pytest's environment table and the generator line fold away at the end of the page.
    var fold = document.createElement("details");
    fold.id = "environment-fold";
    var summary = document.createElement("summary");
    summary.textContent = "Environment (pytest-metadata) / 运行环境";
    fold.appendChild(summary);
    ["environment-header", "environment"].forEach(function (id) {
      var node = document.getElementById(id);
      if (node) { fold.appendChild(node); }
    });
    var generated = handbook.nextElementSibling;
    if (generated && generated.tagName === "P") { fold.appendChild(generated); }
    var footer = document.querySelector("footer");
    document.body.insertBefore(fold, footer);
  }

  function filter() {
    var input = document.getElementById("handbook-filter");
    var count = document.getElementById("filter-count");
    if (!input) { return; }
    var items = Array.prototype.slice.call(document.querySelectorAll("#handbook [data-filter]"));
    var texts = items.map(function (item) { return item.textContent.toLowerCase(); });
    input.addEventListener("input", function () {
      var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      items.forEach(function (item, i) {
        var match = words.every(function (w) { return texts[i].indexOf(w) >= 0; });
        item.classList.toggle("hidden-by-filter", !match);
        if (match) { shown += 1; }
      });
      count.textContent = words.length ? shown + " / " + items.length : "";
    });
  }

  function printCard() {
    var button = document.getElementById("print-card");
    if (!button) { return; }
    button.addEventListener("click", function () {
      document.body.classList.add("print-card");
      window.print();
      document.body.classList.remove("print-card");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    layout();
    filter();
    printCard();
  });
}());
