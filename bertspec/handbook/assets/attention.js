/* bertspec attention view: every head of a layer side by side and one enlarged, for each example batch, drawn from
   the JSON beside each .attention-view (the handbook's evidence, or the page `bertspec trace --html` writes).
   Probabilities arrive as float32 bytes (little-endian, base64): what is drawn is exactly what the model computed.
   No network. */
(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var TICKS = [0, 0.25, 0.5, 0.75, 1];
  var WHITE = [255, 255, 255], DARK = [8, 48, 107];  // the colour scale's ends: probability 0 and 1
  var TYPE_COLOURS = ["#90a4ae", "#e07b00"];  // token type 0 (segment A) and 1 (segment B)
  var FONT = 12;  // label size in px: readable at the page's own scale
  var THUMB = 150;  // a small multiple's side in px, at most

  function svgNode(name, attributes, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attributes).forEach(function (key) { node.setAttribute(key, attributes[key]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function colour(p) {
    var c = WHITE.map(function (low, i) { return Math.round(low + (DARK[i] - low) * p); });
    return "rgb(" + c.join(",") + ")";
  }

  function decode(base64) {
    var bytes = atob(base64), view = new DataView(new ArrayBuffer(bytes.length));
    for (var i = 0; i < bytes.length; i += 1) { view.setUint8(i, bytes.charCodeAt(i)); }
    var values = new Float32Array(bytes.length / 4);
    for (var j = 0; j < values.length; j += 1) { values[j] = view.getFloat32(4 * j, true); }
    return values;
  }

  function batchOf(record) {
    var b = { name: record.name, tokens: record.tokens, padded: record.padded, types: record.types,
      shape: record.shape, values: decode(record.probs) };
    b.typed = record.types.some(function (row) { return row.some(function (t) { return t !== 0; }); });
    return b;
  }

  // probs[layer][row][head] as a function of (query, key).
  function probsOf(batch, layer, row, head) {
    var s = batch.shape, t = s[3], offset = (((layer * s[1] + row) * s[2] + head) * t) * t;
    return function (q, k) { return batch.values[offset + q * t + k]; };
  }

  function label(token, padded) { return padded ? token + " ·pad" : token; }

  function select(text, names, onChange) {
    var wrap = document.createElement("label");
    wrap.textContent = text + " ";
    var box = document.createElement("select");
    fill(box, names);
    box.addEventListener("change", function () { onChange(+box.value); });
    wrap.appendChild(box);
    return { label: wrap, box: box };
  }

  function fill(box, names) {
    box.textContent = "";
    names.forEach(function (name, i) {
      var option = document.createElement("option");
      option.value = String(i);
      option.textContent = name;
      box.appendChild(option);
    });
  }

  function range(n, name) { return Array.apply(null, Array(n)).map(function (_, i) { return name(i); }); }

  function firstPaddedRow(batch) { return Math.max(0, batch.padded.findIndex(function (r) { return r.indexOf(true) >= 0; })); }

  function attentionView(container) {
    var data = JSON.parse(container.querySelector("script").textContent);
    var batches = data.batches.map(batchOf);
    var state = { batch: 0, row: firstPaddedRow(batches[0]), layer: 0, head: 0 };
    var controls = document.createElement("div"), heads = document.createElement("div");
    var enlarged = document.createElement("div"), legend = document.createElement("div");
    controls.className = "controls";
    heads.className = "heads";
    enlarged.className = "enlarged";
    legend.className = "legend";
    function rowNames() {
      return batches[state.batch].tokens.map(function (tokens, i) {
        var words = tokens.length > 6 ? tokens.slice(0, 6).join(" ") + " …" : tokens.join(" ");
        return i + ": " + words;
      });
    }
    function draw() {
      var batch = batches[state.batch];
      drawHeads(heads, batch, state, data.heads, function (head) { state.head = head; draw(); });
      enlarged.textContent = "";
      heatmap(enlarged, batch, state);
      legend.textContent = "";
      legend.appendChild(scale(batch.typed));
    }
    var rowSelect = select("句子 / sequence", rowNames(), function (i) { state.row = i; draw(); });
    var batchSelect = select("例子 / batch", batches.map(function (b) { return b.name; }), function (i) {
      state.batch = i;
      state.row = firstPaddedRow(batches[i]);
      fill(rowSelect.box, rowNames());
      rowSelect.box.value = String(state.row);
      draw();
    });
    var layerSelect = select("层 / layer", range(data.layers, String), function (i) { state.layer = i; draw(); });
    batchSelect.box.className = "batch";
    rowSelect.box.className = "sequence";
    layerSelect.box.className = "layer";
    rowSelect.box.value = String(state.row);
    [batchSelect, rowSelect, layerSelect].forEach(function (s) { controls.appendChild(s.label); });
    var note = document.createElement("p");
    note.className = "note";
    note.textContent = "每个小图是一个头（行 = query，列 = key），点击放大；红色虚线框出的列是 padding 的 key（BERT 的 [PAD]），格中的 0 是严格的 0。" +
      " Each small map is one head (rows: queries, columns: keys); click one to enlarge it. Dashed red columns are" +
      " padding keys (BERT's [PAD]), the 0 in their cells exactly zero; hover a cell for its value.";
    [controls, legend, heads, enlarged, note].forEach(function (part) { container.appendChild(part); });
    draw();
  }

  function drawHeads(holder, batch, state, count, choose) {
    holder.textContent = "";
    var t = batch.tokens[state.row].length, cell = Math.max(2, Math.min(10, Math.floor(THUMB / t)));
    for (var h = 0; h < count; h += 1) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "head" + (h === state.head ? " chosen" : "");
      button.setAttribute("aria-pressed", String(h === state.head));
      button.appendChild(cells(batch, state.row, state.layer, h, cell, 0, 0, false));
      button.appendChild(document.createTextNode("头 / head " + h));
      button.addEventListener("click", choose.bind(null, h));
      holder.appendChild(button);
    }
  }

  // The T x T cells of one head at (x0, y0); large: with [PAD] marks, exact zeros written in, a tooltip per cell.
  function cells(batch, row, layer, head, cell, x0, y0, large) {
    var tokens = batch.tokens[row], padded = batch.padded[row], n = tokens.length, p = probsOf(batch, layer, row, head);
    var group = large ? svgNode("g", {}) : svgNode("svg", { width: n * cell, height: n * cell + 3, role: "img",
      "class": "attention-thumb", "aria-label": "attention probabilities, " + batch.name + ", sequence " + row +
      ", layer " + layer + ", head " + head });
    for (var q = 0; q < n; q += 1) {
      for (var k = 0; k < n; k += 1) {
        var value = p(q, k);
        var rect = svgNode("rect", { x: x0 + k * cell, y: y0 + q * cell, width: large ? cell - 1 : cell,
          height: large ? cell - 1 : cell, fill: colour(value) });
        if (large) {
          rect.setAttribute("data-p", String(value));  // exact: a float32 is a double with the same value
          if (padded[k]) { rect.setAttribute("class", "pad-key"); }
          rect.appendChild(svgNode("title", {}, tokens[q] + " → " + tokens[k] + ": " +
            (value === 0 ? "0 (exactly)" : value.toPrecision(6))));
        }
        group.appendChild(rect);
        if (large && padded[k]) {
          group.appendChild(svgNode("text", { x: x0 + k * cell + cell / 2, y: y0 + q * cell + cell * 0.7,
            "text-anchor": "middle", "class": "exact-zero" }, value === 0 ? "0" : value.toPrecision(2)));
        }
      }
    }
    if (!large) {  // [PAD] keys: a red bar under their columns
      padded.forEach(function (isPad, k) {
        if (isPad) { group.appendChild(svgNode("rect", { x: k * cell, y: n * cell, width: cell, height: 3, "class": "pad-bar" })); }
      });
    }
    return group;
  }

  // Token labels are measured in the page, so margins fit the longest and no label is cut off.
  function labelWidth(svg, text) {
    var node = svgNode("text", {}, text);
    svg.appendChild(node);
    var measured = node.getComputedTextLength();
    svg.removeChild(node);
    // Hidden (a filtered-out section), nothing is measured: estimate, CJK characters a full em.
    return measured || text.split("").reduce(function (w, ch) { return w + (ch.charCodeAt(0) > 0x2e80 ? FONT : FONT * 0.62); }, 0);
  }

  function heatmap(holder, batch, state) {
    var tokens = batch.tokens[state.row], padded = batch.padded[state.row], types = batch.types[state.row];
    var n = tokens.length;
    var svg = svgNode("svg", { role: "img", "class": "attention-heatmap", "aria-label": "attention probabilities, " +
      batch.name + ", sequence " + state.row + ", layer " + state.layer + ", head " + state.head });
    holder.appendChild(svg);
    var widest = Math.max.apply(null, tokens.map(function (tok, i) { return labelWidth(svg, label(tok, padded[i])); }));
    var strip = batch.typed ? 8 : 0, margin = Math.ceil(widest) + 8 + strip;
    var room = (holder.clientWidth || 520) - margin - 12;
    var cell = Math.max(FONT + 4, Math.min(28, Math.floor(room / n)));
    svg.setAttribute("width", margin + n * cell + 12);
    svg.setAttribute("height", margin + n * cell + 4);
    for (var j = 0; j < n; j += 1) {
      var x = margin + j * cell + cell / 2, y = margin - strip - 4, cls = padded[j] ? "pad" : "";
      svg.appendChild(svgNode("text", { x: x + FONT * 0.35, y: y, transform: "rotate(-90 " + (x + FONT * 0.35) + " " + y + ")",
        "class": cls }, label(tokens[j], padded[j])));
      svg.appendChild(svgNode("text", { x: margin - strip - 4, y: margin + j * cell + cell / 2 + FONT * 0.35,
        "text-anchor": "end", "class": cls }, label(tokens[j], padded[j])));
      if (strip) {
        var fill = TYPE_COLOURS[types[j]] || "#000";
        svg.appendChild(svgNode("rect", { x: margin + j * cell, y: margin - strip, width: cell - 1, height: strip - 2, fill: fill }));
        svg.appendChild(svgNode("rect", { x: margin - strip, y: margin + j * cell, width: strip - 2, height: cell - 1, fill: fill }));
      }
    }
    svg.appendChild(cells(batch, state.row, state.layer, state.head, cell, margin, margin, true));
  }

  // The colour scale with its values, the padding mark and, for a pair, the token types; no wider than its
  // content, so that it fits a narrow card.
  function scale(typed) {
    var width = 200, x0 = 8, svg = svgNode("svg", { width: typed ? 470 : 350, height: 44, "class": "attention-scale", role: "img",
      "aria-label": "colour scale: probability 0 (white) to 1 (dark blue)" });
    for (var i = 0; i < 50; i += 1) {
      svg.appendChild(svgNode("rect", { x: x0 + i * width / 50, y: 4, width: width / 50 + 0.5, height: 14, fill: colour(i / 49) }));
    }
    TICKS.forEach(function (tick) {
      var x = x0 + tick * width;
      svg.appendChild(svgNode("line", { x1: x, x2: x, y1: 18, y2: 23, stroke: "#1a1a1a" }));
      svg.appendChild(svgNode("text", { x: x, y: 37, "text-anchor": "middle" }, String(tick)));
    });
    var x = x0 + width + 22;
    svg.appendChild(svgNode("rect", { x: x, y: 4, width: 14, height: 14, fill: "#fff", "class": "pad-key" }));
    svg.appendChild(svgNode("text", { x: x + 20, y: 16 }, "padding key"));
    if (typed) {
      TYPE_COLOURS.forEach(function (fill, t) {
        svg.appendChild(svgNode("rect", { x: x + 100 + t * 70, y: 4, width: 14, height: 14, fill: fill }));
        svg.appendChild(svgNode("text", { x: x + 120 + t * 70, y: 16 }, "type " + t));
      });
    }
    svg.appendChild(svgNode("text", { x: x, y: 37 }, "概率 / probability" + (typed ? "; token type A / B" : "")));
    return svg;
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll(".attention-view"), attentionView);
  });
}());
