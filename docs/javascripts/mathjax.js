// MathJax for pymdownx.arithmatex (generic mode): \( \) inline, \[ \] display. MathJax itself is
// vendored (javascripts/vendor/mathjax/, see VENDORED.txt) so formulas render offline.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// MathJax typesets a page when it loads. The theme's document$ emits once for that load and
// again after every instant navigation, which swaps in new content that needs typesetting.
// The first emission is skipped: clearing MathJax's caches after it has typeset the page
// drops the CSS that draws every glyph, and the re-run finds no TeX left to redraw it from.
let firstPage = true;
document$.subscribe(() => {
  if (firstPage) {
    firstPage = false;
    return;
  }
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
