/* bertspec attention view: every layer and head of a batch's attention probabilities, drawn from the JSON
   beside each .attention-view (the handbook's evidence, or the page `bertspec trace --html` writes). No network. */
(function () {
  var SVG = "http://www.w3.org/2000/svg";

  function svgNode(name, attributes, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attributes).forEach(function (key) { node.setAttribute(key, attributes[key]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function select(label, count, prefix, onChange) {
    var wrap = document.createElement("label");
    wrap.textContent = label + " ";
    var box = document.createElement("select");
    for (var i = 0; i < count; i += 1) {
      var option = document.createElement("option");
      option.value = String(i);
      option.textContent = prefix + i;
      box.appendChild(option);
    }
    box.addEventListener("change", onChange);
    wrap.appendChild(box);
    return { label: wrap, box: box };
  }

  function attentionView(container) {
    var data = JSON.parse(container.querySelector("script").textContent);
    var controls = document.createElement("div");
    controls.className = "controls";
    var holder = document.createElement("div");
    // Open on the first sequence that has padding, so the [PAD] keys are in view.
    var padded = data.padded.findIndex(function (row) { return row.indexOf(true) >= 0; });
    var state = { row: Math.max(padded, 0), layer: 0, head: 0 };
    function draw() {
      holder.textContent = "";
      holder.appendChild(heatmap(data, state.row, state.layer, state.head));
    }
    var rows = select("句子 / sequence", data.tokens.length, "", function (ev) { state.row = +ev.target.value; draw(); });
    var layers = select("层 / layer", data.layers, "", function (ev) { state.layer = +ev.target.value; draw(); });
    var heads = select("头 / head", data.heads, "", function (ev) { state.head = +ev.target.value; draw(); });
    rows.box.value = String(state.row);
    [rows, layers, heads].forEach(function (s) { controls.appendChild(s.label); });
    var legend = document.createElement("p");
    legend.className = "note";
    legend.textContent = "行 = query，列 = key；红色虚线框出的列是 [PAD] key，格中的数字是它的概率（0 = 严格为 0）。" +
      " Rows: queries, columns: keys; dashed red columns are [PAD] keys, the number in each cell is its probability" +
      " (0 = exactly zero).";
    container.appendChild(controls);
    container.appendChild(holder);
    container.appendChild(legend);
    draw();
  }

  function heatmap(data, row, layer, head) {
    var tokens = data.tokens[row], padded = data.padded[row];
    var probs = data.probs[layer][row][head];
    var n = tokens.length, cell = 26, left = 70, top = 64;
    var svg = svgNode("svg", { width: left + n * cell + 8, height: top + n * cell + 8, role: "img",
      "aria-label": "attention probabilities, layer " + layer + ", head " + head, "class": "attention-heatmap" });
    for (var j = 0; j < n; j += 1) {
      var x = left + j * cell + cell / 2;
      var label = svgNode("text", { x: x, y: top - 6, transform: "rotate(-60 " + x + " " + (top - 6) + ")" },
                          tokens[j] + (padded[j] ? " ·pad" : ""));
      svg.appendChild(label);
      svg.appendChild(svgNode("text", { x: left - 4, y: top + j * cell + cell * 0.65, "text-anchor": "end" }, tokens[j]));
    }
    for (var q = 0; q < n; q += 1) {
      for (var k = 0; k < n; k += 1) {
        var p = probs[q][k];
        var shade = Math.round(255 - 215 * Math.min(1, p * 2));
        var rect = svgNode("rect", { x: left + k * cell, y: top + q * cell, width: cell - 1, height: cell - 1,
          fill: "rgb(" + shade + "," + shade + ",255)", stroke: padded[k] ? "#a0111f" : "none",
          "stroke-dasharray": padded[k] ? "3 2" : "none", "data-p": String(p) });
        rect.appendChild(svgNode("title", {}, tokens[q] + " → " + tokens[k] + ": " +
          (p === 0 ? "0 (exactly)" : p.toPrecision(4))));
        svg.appendChild(rect);
        if (padded[k]) {
          svg.appendChild(svgNode("text", { x: left + k * cell + cell / 2, y: top + q * cell + cell * 0.65,
            "text-anchor": "middle", "class": "exact-zero" }, p === 0 ? "0" : p.toPrecision(2)));
        }
      }
    }
    return svg;
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll(".attention-view"), attentionView);
  });
}());
