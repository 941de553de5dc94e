"""The HTML results page's style sheet and script, inlined into the page: it opens from ``file://`` with no server
and no network.

The script shows each case's thumbnail (from the page's JSON block, where every image is once) in its row's Image
cell and beneath its row's masks (from the same block) as the row comes near the window, sorts any table whose
header cells hold buttons (a click or Enter on one), filters the case browsers' columns by method, and opens a
case's large view (a click or Enter on its row). It reads the cases' large images from the same block and builds
every element with ``textContent``, never ``innerHTML``: names from a user's data stay text.
"""

from __future__ import annotations

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1, h2, h3 { line-height: 1.2; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
thead th { background: #f3f3f3; position: sticky; top: 0; z-index: 1; }
th button { font: inherit; font-weight: bold; background: none; border: 0; padding: 0; cursor: pointer;
  text-align: left; color: inherit; }
th button:focus-visible, tr.case:focus-visible { outline: 3px solid #1f6feb; outline-offset: -3px; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
.caption, .note { color: #444; max-width: 100em; }
th .note { font-weight: normal; }
.verdict-holds { background: #e6f4ea; }
.verdict-fails { background: #fde8e8; }
.verdict-unmeasurable { background: #f3f3f3; }
figure { display: inline-block; margin: 0 1em 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px; vertical-align: -0.1em;
  margin-right: 0.3em; border: 1px solid #0003; }
.filters label { margin-right: 1em; white-space: nowrap; }
tr.case { cursor: pointer; }
tr.case:hover { background: #f6f8fa; }
.thumb { display: inline-block; position: relative; background-image: var(--img); background-size: 100% 100%;
  line-height: 0; }
.thumb img, .stack img { display: block; }
.thumb img.overlay, .stack img.overlay { position: absolute; left: 0; top: 0; width: 100%; height: 100%; }
.score { font-size: 12px; color: #333; white-space: nowrap; }
.none { color: #8a1c1c; font-style: italic; font-size: 12px; }
.rerun { color: #5a4a00; font-style: italic; font-size: 12px; }
dialog { max-width: 95vw; max-height: 92vh; overflow: auto; }
.panels { display: flex; flex-wrap: wrap; gap: 12px; }
.panel { margin: 0; }
/* every view at one width, whatever the image's own size: a small image is enlarged, its contours stay sharp */
.stack { display: inline-block; position: relative; line-height: 0; width: min(420px, 85vw); }
.stack img { width: 100%; height: auto; }
.stack img.overlay { height: 100%; image-rendering: pixelated; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  var NUMBER = /^-?\d+(\.\d+)?( ± \d+(\.\d+)?)?†?$/;

  function key(cell) {
    if (cell.hasAttribute("data-value")) {
      var value = cell.getAttribute("data-value");
      return value === "" ? { missing: true } : { number: parseFloat(value) };
    }
    var text = cell.textContent.trim();
    if (text === "" || text === "–") { return { missing: true }; }
    return NUMBER.test(text) ? { number: parseFloat(text) } : { text: text };
  }

  function compare(a, b) {
    if (a.missing || b.missing) { return (a.missing ? 1 : 0) - (b.missing ? 1 : 0); }
    if (a.number !== undefined && b.number !== undefined) { return a.number - b.number; }
    if (a.number !== undefined) { return -1; }
    if (b.number !== undefined) { return 1; }
    return a.text.localeCompare(b.text);
  }

  function sortBy(table, header) {
    var column = Array.prototype.indexOf.call(header.parentNode.children, header);
    var descending = header.getAttribute("aria-sort") === "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) { th.setAttribute("aria-sort", "none"); });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var order = compare(key(a.cells[column]), key(b.cells[column]));
      // missing values stay last whichever way the column is sorted
      if (key(a.cells[column]).missing || key(b.cells[column]).missing) { return order; }
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th button").forEach(function (button) {
      button.addEventListener("click", function () { sortBy(table, button.closest("th")); });
    });
  });

  var data = JSON.parse(document.getElementById("case-data").textContent);

  // a row's case in the JSON block
  function caseOf(row) {
    return data.browsers[row.getAttribute("data-browser")].cases[parseInt(row.getAttribute("data-case"), 10)];
  }

  // a case's thumbnail is in the page once, in the JSON block; its Image cell and every mask of its row show it.
  // Rows get theirs, and their masks, as they come near the window: a page of a thousand cases opens as fast as
  // one of a hundred
  function showThumbnail(row) {
    if (row.hasAttribute("data-shown")) { return; }
    row.setAttribute("data-shown", "");
    var thumbnail = row.querySelector("td.image img");
    thumbnail.src = data.images[parseInt(thumbnail.getAttribute("data-image"), 10)];
    row.style.setProperty("--img", "url(\"" + thumbnail.src + "\")");
    var shown = caseOf(row);
    row.querySelectorAll("img[data-mask]").forEach(function (mask) {
      var column = mask.getAttribute("data-mask");
      mask.src = column === "truth" ? shown.truth_thumb : shown.cells[parseInt(column, 10)].thumb;
    });
  }
  // an image without a source is laid out as its alt text, which took 7 s for the 11,000 of ACDC's page: until its
  // row nears the window each shows a blank (a transparent 1-px GIF) at its size. The cases, hidden while the page
  // parsed, are then laid out once
  var BLANK = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";
  document.querySelectorAll("#cases img:not([src])").forEach(function (image) { image.src = BLANK; });
  document.getElementById("cases").hidden = false;
  var caseRows = document.querySelectorAll("tr.case");
  if ("IntersectionObserver" in window) {
    var nearWindow = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) { showThumbnail(entry.target); nearWindow.unobserve(entry.target); }
      });
    }, { rootMargin: "1500px 0px" });
    caseRows.forEach(function (row) { nearWindow.observe(row); });
  } else {
    caseRows.forEach(showThumbnail);
  }

  document.querySelectorAll(".filters input[type=checkbox]").forEach(function (box) {
    box.addEventListener("change", function () {
      var table = document.getElementById(box.getAttribute("data-table"));
      table.classList.toggle("hide-" + box.getAttribute("data-method"), !box.checked);
    });
  });

  var dialog = document.getElementById("case-view");

  function image(src, alt, overlay) {
    var element = document.createElement("img");
    element.src = src;
    element.alt = alt;
    if (overlay) { element.className = "overlay"; }
    return element;
  }

  function panel(title, layers) {
    var figure = document.createElement("figure");
    figure.className = "panel";
    var stack = document.createElement("div");
    stack.className = "stack";
    layers.forEach(function (layer, i) { stack.appendChild(image(layer[0], layer[1], i > 0)); });
    var caption = document.createElement("figcaption");
    caption.textContent = title;
    figure.appendChild(stack);
    figure.appendChild(caption);
    return figure;
  }

  function score(value, digits) { return value === null ? "–" : value.toFixed(digits); }

  function open(row) {
    var browser = data.browsers[row.getAttribute("data-browser")];
    var shown = caseOf(row);
    var picture = data.images[shown.image];
    var table = row.closest("table");
    var panels = dialog.querySelector(".panels");
    panels.replaceChildren();
    dialog.querySelector("h2").textContent = browser.label + ": case " + shown.id;
    panels.appendChild(panel("Ground truth (yellow)", [
      [picture, "case " + shown.id + ": image"],
      [shown.truth, "case " + shown.id + ": ground-truth contour"]]));
    browser.columns.forEach(function (column, j) {
      if (table.classList.contains("hide-" + column.method)) { return; }
      var cell = shown.cells[j];
      var text = column.label + " (" + column.run + "): Dice " + score(cell.dice, 3) + ", HD95 " + score(cell.hd95, 2);
      if (cell.contour === null) {
        var missing = document.createElement("p");
        missing.className = "none";
        missing.textContent = column.label + ": no predictions kept";
        panels.appendChild(missing);
        return;
      }
      panels.appendChild(panel(text, [
        [picture, "case " + shown.id + ", " + column.label + ": image, Dice " + score(cell.dice, 3)],
        [shown.truth, "case " + shown.id + ": ground-truth contour"],
        [cell.contour, "case " + shown.id + ", " + column.label + ": predicted contour, Dice " + score(cell.dice, 3)]
      ]));
    });
    dialog.showModal();
  }

  document.querySelectorAll("tr.case").forEach(function (row) {
    row.addEventListener("click", function () { open(row); });
    row.addEventListener("keydown", function (event) {
      if (event.key === "Enter") { event.preventDefault(); open(row); }
    });
  });
  dialog.querySelector("button.close").addEventListener("click", function () { dialog.close(); });
})();
"""
