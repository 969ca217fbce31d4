/* bertspec: the run log's data travels gzip-compressed in the page (bertspec.handbook.render.compact_run_log):
   unpacked here, in the browser, then pytest-html's own script runs on it as it would have at load. No network. */
(function () {
  "use strict";
  var container = document.getElementById("data-container");
  var bytes = Uint8Array.from(atob(container.getAttribute("data-gzip")), function (c) { return c.charCodeAt(0); });
  var unpacked = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  new Response(unpacked).text().then(function (json) {
    // Rows whose table cells were left out (they repeat the row's fields) get them back from the template.
    var data = JSON.parse(json);
    Object.keys(data.tests).forEach(function (id) {
      data.tests[id].forEach(function (row) {
        if (!row.resultsTableRow) {
          row.resultsTableRow = data.rowTemplate.map(function (cell) {
            return cell.replace(/\{(\w+)\}/g, function (_, field) { return row[field]; });
          });
        }
      });
    });
    container.setAttribute("data-jsonblob", JSON.stringify(data));
    var app = document.createElement("script");
    app.textContent = document.getElementById("run-log-app").textContent;
    container.parentNode.appendChild(app);
    document.body.setAttribute("data-run-log", "ready");
  });
}());
