/* bertspec handbook: page layout, the filter box and its hits, the printable card. No network. */
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

  // The filter hides every [data-filter] item without all the words typed, says when nothing matches, and lists
  // the questions it found under the box: BERT's first, the appendix about the tool last.
  var HITS_LISTED = 8;

  function filter() {
    var input = document.getElementById("handbook-filter");
    var count = document.getElementById("filter-count");
    var hits = document.getElementById("filter-hits");
    if (!input) { return; }
    var items = Array.prototype.slice.call(document.querySelectorAll("#handbook [data-filter]"));
    var texts = items.map(function (item) { return item.textContent.toLowerCase(); });
    input.addEventListener("input", function () {
      var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var found = [];
      items.forEach(function (item, i) {
        var match = words.every(function (w) { return texts[i].indexOf(w) >= 0; });
        item.classList.toggle("hidden-by-filter", !match);
        if (match) { found.push(item); }
      });
      count.classList.toggle("empty", words.length > 0 && found.length === 0);
      if (!words.length) {
        count.textContent = "";
      } else if (found.length) {
        count.textContent = found.length + " / " + items.length;
      } else {
        count.textContent = "没有匹配 / nothing matches “" + input.value.trim() + "”";
      }
      listHits(hits, words.length ? found.filter(function (item) { return item.matches("li.qa"); }) : []);
    });
  }

  function inAppendix(item) { return item.closest("[data-appendix]") ? 1 : 0; }

  function listHits(hits, questions) {
    var ordered = questions.slice().sort(function (a, b) { return inAppendix(a) - inAppendix(b); });  // stable
    hits.textContent = "";
    ordered.slice(0, HITS_LISTED).forEach(function (item) {
      var link = item.querySelector("a").cloneNode(true);
      var li = document.createElement("li");
      if (inAppendix(item)) { li.className = "appendix"; }
      li.appendChild(link);
      hits.appendChild(li);
    });
    if (ordered.length > HITS_LISTED) {
      var more = document.createElement("li");
      more.className = "more";
      more.textContent = "… 还有 " + (ordered.length - HITS_LISTED) + " 个问题，见问答索引 / more in the Q&A index";
      hits.appendChild(more);
    }
    hits.hidden = ordered.length === 0;
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
